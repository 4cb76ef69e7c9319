//! Binding and serving: the listener, the token and the allowed folders of one server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::jobs::Jobs;
use crate::routes::{router, AppState};
use crate::security::{Roots, Token};

/// How `whittle ui` was started.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address or host name to bind (loopback unless told otherwise).
    pub host: String,
    /// Port (0: any free one).
    pub port: u16,
    /// Where uploads and jobs go; relative paths start here.
    pub work_dir: PathBuf,
    /// Folders besides the work folder and the assets folder that paths may name.
    pub allow: Vec<PathBuf>,
    /// Most unfinished jobs at once.
    pub max_jobs: usize,
    /// Most bytes of one upload.
    pub max_upload_bytes: usize,
    /// Whittle's assets folder (allowed too; its datasets and models are offered).
    pub assets: PathBuf,
}

/// A bound server, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Set when the address is not loopback: anyone who can reach it and has the token
    /// can run jobs and read the allowed folders.
    pub warning: Option<String>,
}

impl Server {
    /// Binds `options.host:options.port` (a name binds its first address) with a fresh
    /// token.
    pub async fn bind(options: &Options) -> anyhow::Result<Server> {
        let mut roots = Roots::new(&options.work_dir, &options.allow)?;
        roots.allow_if_present(&options.assets);
        let listener = tokio::net::TcpListener::bind((options.host.as_str(), options.port))
            .await
            .with_context(|| format!("--host {} --port {}", options.host, options.port))?;
        let addr = listener.local_addr()?;
        let warning = (!addr.ip().is_loopback()).then(|| {
            format!(
                "--host {} is not loopback: other machines can reach this server; anyone \
                 with the token can run jobs and read the allowed folders",
                options.host
            )
        });
        let jobs = Jobs::new(roots.work_dir().join("jobs"), options.max_jobs);
        let state = AppState {
            token: Token::random(),
            roots: Arc::new(roots),
            jobs: Arc::new(jobs),
            max_upload_bytes: options.max_upload_bytes,
            assets: options.assets.clone(),
        };
        Ok(Server {
            listener,
            state,
            addr,
            warning,
        })
    }

    /// The token every request must show.
    pub fn token(&self) -> &str {
        self.state.token.as_str()
    }

    /// The page's address with the token.
    pub fn url(&self) -> String {
        let host = match self.addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        format!("http://{host}:{}/?token={}", self.addr.port(), self.token())
    }

    /// The allowed folders.
    pub fn allowed(&self) -> &[PathBuf] {
        self.state.roots.allowed()
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> anyhow::Result<()> {
        axum::serve(self.listener, router(self.state))
            .await
            .context("serving the UI")
    }

    /// The routes, for tests that call them without a socket.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
    }
}

/// Binds `options` and serves on a runtime of its own until the process ends; `ready`
/// gets the bound server first (to show its address and token).
pub fn run(options: &Options, ready: impl FnOnce(&Server)) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the server's runtime")?;
    runtime.block_on(async {
        let server = Server::bind(options).await?;
        ready(&server);
        server.serve().await
    })
}
