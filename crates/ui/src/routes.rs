//! The HTTP routes: the page and its assets, and the JSON API the page and the tests use.
//! Every route needs the token ([`security::require_token`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use whittle_pipeline::inspect::{inspect, Inspection};
use whittle_pipeline::{DataSource, ModelSource};

use crate::api::{ApiError, JobCreated, JobRequest, JobView, Status};
use crate::assets;
use crate::form::confined_recipe;
use crate::jobs::{Jobs, Work, MODEL_FILE, REPORT_FILE};
use crate::security::{self, upload_name, Roots, Token};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The token requests must show.
    pub token: Token,
    /// The allowed folders.
    pub roots: Arc<Roots>,
    /// The jobs.
    pub jobs: Arc<Jobs>,
    /// Most bytes an upload may have.
    pub max_upload_bytes: usize,
    /// Whittle's assets folder (datasets and models offered on the page).
    pub assets: PathBuf,
}

/// Content-Security-Policy of the page: everything from this origin only.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
     frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'";
/// Content-Security-Policy of a report: its own inline styles and SVG, nothing loaded.
const REPORT_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// The application's routes on `state`.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.max_upload_bytes;
    Router::new()
        .route("/", get(page))
        .route("/assets/{file}", get(asset))
        .route("/api/config", get(config))
        .route("/api/zoo", get(zoo))
        .route("/api/inspect", get(inspect_model))
        .route(
            "/api/upload",
            post(upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/jobs", post(create_job).get(list_jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/events", get(events))
        .route("/api/jobs/{id}/model", get(model))
        .route("/api/jobs/{id}/report", get(report))
        .fallback(|| async { ApiError::not_found("no such page or endpoint") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::require_token,
        ))
        .with_state(state)
}

async fn page() -> Response {
    let (kind, body) = assets::INDEX;
    (
        [(CONTENT_TYPE, kind), (CONTENT_SECURITY_POLICY, PAGE_POLICY)],
        body,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (kind, body) =
        assets::find(&file).ok_or_else(|| ApiError::not_found(format!("no asset {file:?}")))?;
    Ok(([(CONTENT_TYPE, kind)], body).into_response())
}

/// `GET /api/config`: the folders, limits, and the datasets and models the assets hold.
async fn config(State(state): State<AppState>) -> Json<Value> {
    let assets = &state.assets;
    let datasets: Vec<String> = ["mnist", "fashion-mnist"]
        .iter()
        .filter(|name| assets.join(name).is_dir())
        .map(|name| format!("{name}:{}", assets.join(name).display()))
        .collect();
    let mut models: Vec<String> = std::fs::read_dir(assets.join("models"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .map(|p| p.display().to_string())
        .collect();
    models.sort();
    Json(json!({
        "work_dir": state.roots.work_dir(),
        "allowed": state.roots.allowed(),
        "assets": assets,
        "datasets": datasets,
        "models": models,
        "max_upload_bytes": state.max_upload_bytes,
        "forms": { "compress": true, "auto": true, "continual": true },
    }))
}

/// `GET /api/zoo`: every zoo model with its options.
async fn zoo() -> Json<Value> {
    let option = |o: &whittle_zoo::OptionInfo| {
        json!({ "key": o.key, "default": o.default,
        "help": o.help })
    };
    let models: Vec<Value> = whittle_zoo::catalog()
        .iter()
        .map(|m| {
            json!({ "name": m.name, "spec": format!("{}{}", whittle_zoo::PREFIX, m.name),
            "summary": m.summary, "options": m.options.iter().map(option).collect::<Vec<_>>() })
        })
        .collect();
    Json(json!({ "models": models,
        "common_options": whittle_zoo::COMMON_OPTIONS.iter().map(option).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
struct ModelQuery {
    model: String,
}

/// `GET /api/inspect?model=PATH|zoo:NAME`.
async fn inspect_model(
    State(state): State<AppState>,
    Query(query): Query<ModelQuery>,
) -> Result<Json<Inspection>, ApiError> {
    let source = match ModelSource::parse(&query.model) {
        ModelSource::File(path) => {
            let path = path.display().to_string();
            ModelSource::File(state.roots.confine("model", &path)?)
        }
        zoo => zoo,
    };
    let inspection = tokio::task::spawn_blocking(move || {
        let model = source.load()?;
        inspect(&source, &model, &HashMap::new())
    })
    .await
    .map_err(|e| ApiError::internal(format!("inspecting {}: {e}", query.model)))?
    .map_err(|e| ApiError::bad_request(format!("model: {e}")))?;
    Ok(Json(inspection))
}

#[derive(Deserialize)]
struct UploadQuery {
    name: String,
}

/// `POST /api/upload?name=FILE.onnx` with the model's bytes as the body: checked to be a
/// valid ONNX model, written to `WORK_DIR/uploads/FILE.onnx`; answers `{"path"}`.
async fn upload(
    State(state): State<AppState>,
    Query(query): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = upload_name(&query.name)?;
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "upload {name}: larger than the limit of {} (start `whittle ui` with \
             --max-upload-mb to change it)",
            whittle_ir::memory::human_bytes(state.max_upload_bytes as u64)
        )),
        _ => ApiError::bad_request(format!("upload {name}: {}", e.body_text())),
    })?;
    let model = whittle_ir::Model::from_bytes(&bytes, None)
        .map_err(|e| ApiError::bad_request(format!("upload {name}: not an ONNX model: {e}")))?;
    whittle_ir::validate(&model)
        .map_err(|e| ApiError::bad_request(format!("upload {name}: invalid model: {e}")))?;
    let dir = state.roots.work_dir().join("uploads");
    let path = dir.join(&name);
    std::fs::create_dir_all(&dir)
        .and_then(|_| whittle_ir::files::write_bytes_atomic(&path, &bytes).map_err(io_error))
        .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
    Ok(Json(json!({ "path": path, "bytes": bytes.len() })))
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// `POST /api/jobs`: `{"recipe"}`, `{"form"}` (compress), `{"auto"}` or `{"continual"}`
/// -> `{"id"}`.
async fn create_job(
    State(state): State<AppState>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<JobCreated>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let roots = state.roots.clone();
    let (json, work) = tokio::task::spawn_blocking(move || job_work(request, &roots))
        .await
        .map_err(|e| ApiError::internal(format!("checking the job: {e}")))??;
    let job = state.jobs.submit(json, work)?;
    Ok((StatusCode::CREATED, Json(JobCreated { id: job.id.clone() })))
}

/// The work `request` asks for (as the API shows it), its paths confined to `roots`, the
/// model loaded and the evaluation data checked against its inputs.
fn job_work(request: JobRequest, roots: &Roots) -> Result<(Value, Work), ApiError> {
    let JobRequest {
        recipe,
        form,
        auto,
        continual,
    } = request;
    let recipe = match (recipe, form, auto, continual) {
        (Some(recipe), None, None, None) => recipe,
        (None, Some(form), None, None) => form.recipe()?,
        (None, None, None, Some(form)) => form.recipe()?,
        (None, None, Some(form), None) => {
            let config = form.config(roots)?;
            check_sources(&config.model, Some(&config.eval_data))?;
            let json = json!({ "auto": form });
            return Ok((json, Work::Auto(Box::new(config))));
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `recipe` (a recipe's keys), `form` (the compress form), \
                 `auto` (the auto-optimizer form) or `continual` (the continual-learning form)",
            ))
        }
    };
    let (json, recipe) = confined_recipe(recipe, roots)?;
    let eval_data = (recipe.evaluate.as_ref().and_then(|e| e.data.as_ref()))
        .map(|spec| DataSource::new(spec.as_str()).with_role("data"));
    check_sources(&recipe.model, eval_data.as_ref())?;
    Ok((json, Work::Recipe(recipe)))
}

/// Refuses, before a job starts, a model that does not load and evaluation data that
/// cannot feed it.
fn check_sources(model: &ModelSource, eval_data: Option<&DataSource>) -> Result<(), ApiError> {
    let model = (model.load()).map_err(|e| ApiError::bad_request(format!("model: {e}")))?;
    if let Some(data) = eval_data {
        data.check_inputs(&whittle_exec::model_inputs(&model))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}

/// `GET /api/jobs`: every job.
async fn list_jobs(State(state): State<AppState>) -> Json<Vec<JobView>> {
    Json(state.jobs.list().iter().map(|j| j.view()).collect())
}

/// `GET /api/jobs/{id}`.
async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.jobs.get(&id)?.view()))
}

/// `GET /api/jobs/{id}/events`: server-sent events, each `{"seq", "event", ...}`: every
/// event so far (after `Last-Event-ID` when reconnecting), then the live ones until `done`.
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let job = state.jobs.get(&id)?;
    let after: u64 = (headers.get("last-event-id").and_then(|v| v.to_str().ok()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (history, live) = job.attach();
    let is_done = |v: &Value| v["event"] == "done";
    let ended = history.last().is_some_and(|v| is_done(v));
    let past = stream::iter(history);
    let live = stream::unfold((live, ended), move |(mut live, ended)| async move {
        if ended {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(v) => {
                    let end = is_done(&v);
                    return Some((v, (live, end)));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream = past
        .chain(live)
        .filter(move |v| std::future::ready(v["seq"].as_u64().unwrap_or(0) > after))
        .map(|v| {
            let seq = v["seq"].as_u64().unwrap_or(0).to_string();
            Ok(SseEvent::default().id(seq).data(v.to_string()))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A finished job's file `name`, or 404 naming the job's status (a folder left by an
/// earlier server may hold an older file of the same name: only a done job's is served).
async fn job_file(state: &AppState, id: &str, name: &str) -> Result<Vec<u8>, ApiError> {
    let job = state.jobs.get(id)?;
    let status = job.view().status;
    let path = job.dir.join(name);
    if status == Status::Done {
        let bytes = tokio::fs::read(&path).await;
        return bytes.map_err(|e| ApiError::internal(format!("reading {}: {e}", path.display())));
    }
    let status = serde_json::to_value(status).unwrap_or_default();
    Err(ApiError::not_found(format!(
        "job {id} has no {name} yet (status {})",
        status.as_str().unwrap_or("?")
    )))
}

/// `GET /api/jobs/{id}/model`: the final model, as a download.
async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = job_file(&state, &id, MODEL_FILE).await?;
    let disposition = format!("attachment; filename=\"whittle-job-{id}.onnx\"");
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/jobs/{id}/report`: the pipeline's HTML report of the run.
async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = job_file(&state, &id, REPORT_FILE).await?;
    Ok((
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, REPORT_POLICY),
        ],
        bytes,
    )
        .into_response())
}
