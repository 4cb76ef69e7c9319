//! Progress and log lines of long work, as events an [`Observer`] renders.
//!
//! Library code never prints: it sends [`Event`]s. The CLI turns them into indicatif bars
//! and stderr lines, a UI into server-sent events (they serialize to JSON).

use serde::Serialize;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Progress detail, shown when the user asks for it.
    Info,
    /// Something the user should read: the result may not be what they expect.
    Warn,
}

/// One thing that happened during a step.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A task with `total` units of work (None: unknown) begins.
    Begin {
        /// What is being done ("calibrate", "epoch 3").
        task: String,
        /// Units of work, if known.
        total: Option<u64>,
    },
    /// `done` units of the current task are finished.
    Progress {
        /// Units finished so far.
        done: u64,
        /// A short status (loss, accuracy), if any.
        message: Option<String>,
    },
    /// The current task ended.
    End,
    /// A log line.
    Log {
        /// Its severity.
        level: Level,
        /// The text.
        message: String,
    },
}

/// Receives the events of long work.
pub trait Observer: Send + Sync {
    /// Called for every event, in order.
    fn event(&self, event: &Event);
}

/// An observer that drops every event (tests, quiet runs).
#[derive(Clone, Copy, Debug, Default)]
pub struct SilentObserver;

impl Observer for SilentObserver {
    fn event(&self, _event: &Event) {}
}

/// Shorthands for sending events.
impl dyn Observer + '_ {
    /// Sends a log line at `level`.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.event(&Event::Log {
            level,
            message: message.into(),
        });
    }
}
