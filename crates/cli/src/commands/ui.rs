//! `whittle ui`: the local web UI (whittle-ui), served until the process is stopped.

use std::path::PathBuf;

/// Arguments of `whittle ui`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on; anything but loopback lets other machines reach the UI.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Folder for uploads and jobs; relative paths on the page start here.
    #[arg(long, value_name = "DIR", default_value = "whittle-ui")]
    work_dir: PathBuf,
    /// Another folder whose models and datasets the page may name (repeatable); the work
    /// folder and the assets folder ($WHITTLE_ASSETS) are always allowed.
    #[arg(long, value_name = "DIR")]
    allow: Vec<PathBuf>,
    /// Most jobs running at once; more are refused until one finishes.
    #[arg(long, default_value_t = 2)]
    max_jobs: usize,
    /// Largest model upload, in megabytes.
    #[arg(long, default_value_t = 200)]
    max_upload_mb: usize,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.max_jobs == 0 {
        anyhow::bail!("--max-jobs 0: allow at least one job");
    }
    let options = whittle_ui::Options {
        host: args.host,
        port: args.port,
        work_dir: args.work_dir,
        allow: args.allow,
        max_jobs: args.max_jobs,
        max_upload_bytes: args.max_upload_mb.saturating_mul(1_000_000),
        assets: whittle_data::assets_dir(),
    };
    whittle_ui::run(&options, |server| {
        if let Some(warning) = &server.warning {
            eprintln!("warning: {warning}");
        }
        let allowed: Vec<String> = (server.allowed().iter())
            .map(|p| p.display().to_string())
            .collect();
        eprintln!("whittle ui: paths allowed under {}", allowed.join(", "));
        println!("whittle ui: open {}", server.url());
    })
}
