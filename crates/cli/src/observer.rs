//! The CLI's renderer of pipeline events: indicatif bars and stderr lines.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use whittle_pipeline::{Event, Level, Observer};

/// Draws `Begin`/`Progress`/`End` as one progress bar on stderr (hidden when `quiet`, as
/// under `--json`) and prints log lines: warnings always, info lines unless `quiet`.
pub struct CliObserver {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl CliObserver {
    /// An observer that draws bars and info lines unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        CliObserver {
            quiet,
            bar: Mutex::new(None),
        }
    }

    fn begin(&self, task: &str, total: Option<u64>) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n),
                "{msg:>12} {bar:40} {pos}/{len} {elapsed} {prefix}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{msg:>12} {spinner} {pos} {elapsed} {prefix}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(task.to_string());
        bar
    }
}

impl Observer for CliObserver {
    fn event(&self, event: &Event) {
        let mut current = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Begin { task, total } => {
                if let Some(old) = current.take() {
                    old.finish_and_clear();
                }
                *current = Some(self.begin(task, *total));
            }
            Event::Progress { done, message } => {
                if let Some(bar) = current.as_ref() {
                    bar.set_position(*done);
                    if let Some(m) = message {
                        bar.set_prefix(m.clone());
                    }
                }
            }
            Event::End => {
                if let Some(bar) = current.take() {
                    bar.finish_and_clear();
                }
            }
            Event::Log { level, message } => {
                let line = match level {
                    Level::Warn => format!("warning: {message}"),
                    Level::Info if self.quiet => return,
                    Level::Info => message.clone(),
                };
                match current.as_ref() {
                    Some(bar) => bar.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
            }
        }
    }
}
