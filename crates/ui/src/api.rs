//! The JSON API's types: what `POST /api/jobs` takes, what the job endpoints return, and
//! errors as `{"error": "..."}` with their HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use whittle_pipeline::eval::Metrics;

/// An error answered as `{"error": message}` with `status`; the page shows the message.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, naming the field or file at fault.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request's input is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401: no token or a wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: a path outside the allowed folders.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such job or file.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413: an upload over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 429: the concurrent-job limit is reached.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }

    /// 500: the server failed (a file it could not write).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

/// The body of `POST /api/jobs`: exactly one of a recipe (the pipeline's `Recipe` as JSON,
/// the keys of docs/RECIPES.md), the compress form, the auto-optimizer form or the
/// continual-learning form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A recipe.
    #[serde(default)]
    pub recipe: Option<serde_json::Value>,
    /// The compress form.
    #[serde(default)]
    pub form: Option<crate::form::Form>,
    /// The auto-optimizer form.
    #[serde(default)]
    pub auto: Option<crate::auto_form::AutoForm>,
    /// The continual-learning form.
    #[serde(default)]
    pub continual: Option<crate::continual_form::ContinualForm>,
}

/// The answer to `POST /api/jobs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobCreated {
    /// The job's id, for `/api/jobs/{id}`.
    pub id: String,
}

/// A model's figures on the result card.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CardSide {
    /// Size on disk in megabytes (10^6 bytes).
    pub size_mb: Option<f64>,
    /// One-sample runs per second in ONNX Runtime (1000 / median latency in ms).
    pub fps: Option<f64>,
    /// Median ONNX Runtime latency of one sample, milliseconds.
    pub latency_ms: Option<f64>,
    /// Top-1 accuracy on the evaluation samples, 0..1.
    pub accuracy: Option<f64>,
    /// Parameters (initializer elements).
    pub parameters: Option<u64>,
    /// Multiply-accumulates of one sample.
    pub macs: Option<u64>,
}

impl CardSide {
    /// The card's figures of `metrics` (from the pipeline's one evaluator).
    pub fn of(metrics: &Metrics) -> Self {
        CardSide {
            size_mb: metrics.size_bytes.map(|b| b as f64 / 1e6),
            fps: metrics.latency_ms_ort.map(|ms| 1000.0 / ms),
            latency_ms: metrics.latency_ms_ort,
            accuracy: metrics.top1,
            parameters: metrics.parameters,
            macs: metrics.macs,
        }
    }
}

/// The result card: the input and final models' figures and how they changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// The input model.
    pub before: CardSide,
    /// The final model.
    pub after: CardSide,
    /// How much smaller the final model is, percent of the input's size.
    pub size_reduction_pct: Option<f64>,
    /// Input latency over final latency in ONNX Runtime (above 1: faster).
    pub speedup: Option<f64>,
    /// The complete measurements both sides come from.
    pub metrics: [Metrics; 2],
}

impl Card {
    /// The card of a run whose input measured `before` and final model `after`.
    pub fn new(before: &Metrics, after: &Metrics) -> Self {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let size = |m: &Metrics| m.size_bytes.map(|b| b as f64);
        Card {
            before: CardSide::of(before),
            after: CardSide::of(after),
            size_reduction_pct: ratio(size(after), size(before)).map(|r| 100.0 * (1.0 - r)),
            speedup: ratio(before.latency_ms_ort, after.latency_ms_ort),
            metrics: [before.clone(), after.clone()],
        }
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted, not started.
    Queued,
    /// Its steps are running.
    Running,
    /// Finished: the model, report and card are ready.
    Done,
    /// Stopped by an error.
    Failed,
}

/// The latest progress of a job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// The step running, as the runner names it ("step 2/4 (finetune)").
    pub step: Option<String>,
    /// The task of the step ("epoch 1", "calibrate").
    pub task: Option<String>,
    /// Units of the task finished.
    pub done: u64,
    /// Units of the task in all, when known.
    pub total: Option<u64>,
    /// The task's status line (loss, accuracy).
    pub message: Option<String>,
}

/// `GET /api/jobs/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: String,
    /// Where it is.
    pub status: Status,
    /// Why it failed.
    pub error: Option<String>,
    /// Its latest progress.
    pub progress: Progress,
    /// Events sent so far (the stream's `seq` of the last one).
    pub events: u64,
    /// The recipe it runs (paths made absolute), the input of `whittle pipeline` too; for
    /// an auto job, `{"auto": the form}`.
    pub recipe: serde_json::Value,
    /// The result card, once done.
    pub result: Option<Card>,
    /// Each step's report, once done.
    pub steps: Option<serde_json::Value>,
    /// Once done, the figures of an auto job (`whittle auto --json`'s summary) or of a
    /// continual job (the continual step's report: R matrix, average accuracy,
    /// forgetting); null for other jobs.
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}
