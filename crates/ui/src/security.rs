//! What keeps the UI to its user: a random token required on every request, and server
//! paths confined to the allowed folders.

use std::path::{Component, Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use crate::api::ApiError;
use crate::routes::AppState;

/// The request header that carries the token (a query `token=` or the cookie work too).
pub const TOKEN_HEADER: &str = "x-whittle-token";
/// The cookie a page load with `?token=` sets, so the page's own requests carry it.
const COOKIE_NAME: &str = "whittle_token";

/// The secret a request must show: 32 random hex digits, printed at start.
#[derive(Clone, Debug)]
pub struct Token(String);

impl Token {
    /// A fresh random token.
    pub fn random() -> Self {
        let mut rng = rand::rng();
        Token(
            (0..32)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect(),
        )
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the token (compared in constant time).
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The token a request shows: the header, `Authorization: Bearer`, the query or the
    /// cookie, in that order.
    fn shown(request: &Request) -> Option<(String, bool)> {
        let headers = request.headers();
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        if let Some(t) = header(TOKEN_HEADER) {
            return Some((t.to_string(), false));
        }
        if let Some(t) = header(AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer ")) {
            return Some((t.to_string(), false));
        }
        let query = request.uri().query().unwrap_or("");
        if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token=")) {
            return Some((t.to_string(), true));
        }
        let cookies = headers.get_all(COOKIE).into_iter();
        cookies
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix("whittle_token="))
            .map(|t| (t.to_string(), false))
    }
}

/// Refuses (401) a request without the token; a page opened with `?token=` gets it as a
/// cookie, so the page's scripts, styles and event streams carry it.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match Token::shown(&request) {
        Some((given, from_query)) if state.token.matches(&given) => {
            let mut response = next.run(request).await;
            if from_query {
                let cookie = format!("{COOKIE_NAME}={given}; HttpOnly; SameSite=Strict; Path=/");
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().insert(SET_COOKIE, value);
                }
            }
            response
        }
        Some(_) => ApiError::unauthorized("wrong token: use the URL or token `whittle ui` printed")
            .into_response(),
        None => ApiError::unauthorized(
            "this server needs its token: open the URL `whittle ui` printed (…/?token=…) or send \
             the `x-whittle-token` header",
        )
        .into_response(),
    }
}

/// The folders server paths may name; anything else is refused.
#[derive(Clone, Debug)]
pub struct Roots {
    /// The work folder: uploads and jobs land here, relative paths start here.
    work_dir: PathBuf,
    /// Every allowed folder, canonical (the work folder first).
    allowed: Vec<PathBuf>,
}

impl Roots {
    /// The work folder (created if missing) and the other allowed folders that exist.
    pub fn new(work_dir: &Path, others: &[PathBuf]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work_dir).map_err(|e| {
            anyhow::anyhow!("--work-dir {}: cannot create it: {e}", work_dir.display())
        })?;
        let work_dir = work_dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("--work-dir {}: {e}", work_dir.display()))?;
        let mut allowed = vec![work_dir.clone()];
        for dir in others {
            match dir.canonicalize() {
                Ok(dir) if dir.is_dir() => allowed.push(dir),
                _ => anyhow::bail!("--allow {}: not a folder", dir.display()),
            }
        }
        Ok(Roots { work_dir, allowed })
    }

    /// Adds `dir` when it is a folder (the assets folder may not exist yet).
    pub fn allow_if_present(&mut self, dir: &Path) {
        if let Ok(dir) = dir.canonicalize() {
            if dir.is_dir() && !self.allowed.contains(&dir) {
                self.allowed.push(dir);
            }
        }
    }

    /// The work folder.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The allowed folders.
    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// `path` (relative ones from the work folder) as a canonical path inside an allowed
    /// folder; `what` names the field in errors.
    pub fn confine(&self, what: &str, path: &str) -> Result<PathBuf, ApiError> {
        if path.trim().is_empty() {
            return Err(ApiError::bad_request(format!("{what}: empty path")));
        }
        let full = self.work_dir.join(path);
        let canonical = full
            .canonicalize()
            .map_err(|e| ApiError::bad_request(format!("{what}: {path}: {e}")))?;
        if self.allowed.iter().any(|root| canonical.starts_with(root)) {
            Ok(canonical)
        } else {
            let roots: Vec<String> = self
                .allowed
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            Err(ApiError::forbidden(format!(
                "{what}: {path} is outside the allowed folders ({}); start `whittle ui` with \
                 --allow DIR to use another folder",
                roots.join(", ")
            )))
        }
    }

    /// `spec` (a dataset SPEC, `SCHEME:LOCATION[?options]`) with every file of its location
    /// confined ([`Roots::confine`]) and written as a canonical path.
    pub fn confine_spec(&self, what: &str, spec: &str) -> Result<String, ApiError> {
        let parsed = whittle_data::spec::Spec::parse(spec)
            .map_err(|e| ApiError::bad_request(format!("{what}: {spec}: {e}")))?;
        let files = parsed
            .location
            .split(',')
            .map(|file| self.confine(what, file).map(|p| p.display().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = &spec[parsed.scheme.len() + 1 + parsed.location.len()..];
        Ok(format!("{}:{}{options}", parsed.scheme, files.join(",")))
    }
}

/// A file name for an upload: its last component, made of letters, digits, `.`, `_` and
/// `-` only, ending in `.onnx`.
pub fn upload_name(name: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| {
        Err(ApiError::bad_request(format!(
            "upload name {name:?}: {why}"
        )))
    };
    let mut parts = Path::new(name).components();
    let (Some(Component::Normal(last)), None) = (parts.next(), parts.next()) else {
        return refuse("give a plain file name, no folders");
    };
    let last = last.to_string_lossy();
    if !last
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return refuse("use only letters, digits, `.`, `_` and `-`");
    }
    if !last.ends_with(".onnx") || last.starts_with('.') {
        return refuse("an ONNX model's name ends in .onnx");
    }
    Ok(last.into_owned())
}
