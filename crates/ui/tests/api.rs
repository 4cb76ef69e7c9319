//! The UI's JSON API without a browser: the token, path confinement, upload limits, the
//! concurrent-job limit, bad input as 400 with a message, and a job from submit to its
//! card, event stream, model and report.

#[path = "../../cli/tests/support/mnist_npz.rs"]
mod mnist_npz;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use whittle_testkit::{scratch, Scratch};
use whittle_ui::api::{Card, JobView, Status};
use whittle_ui::{Options, Server};

/// A server on a free loopback port with a fresh work folder, its routes, and the folder
/// (removed when dropped).
async fn server(name: &str, max_jobs: usize, max_upload_bytes: usize) -> (Server, Router, Scratch) {
    let work = scratch(&format!("ui-api-{name}"));
    let options = Options {
        host: "127.0.0.1".into(),
        port: 0,
        work_dir: work.to_path_buf(),
        allow: Vec::new(),
        max_jobs,
        max_upload_bytes,
        assets: whittle_data::assets_dir(),
    };
    let server = Server::bind(&options).await.expect("bind");
    let router = server.router();
    (server, router, work)
}

/// Sends `method path` with the token header and `body` as JSON (unless null).
async fn call(
    router: &Router,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("x-whittle-token", token);
    let body = if body.is_null() {
        Body::empty()
    } else {
        request = request.header(header::CONTENT_TYPE, "application/json");
        Body::from(body.to_string())
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn error(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

fn mnist() -> String {
    format!(
        "mnist:{}",
        whittle_data::assets_dir().join("mnist").display()
    )
}

#[tokio::test]
async fn every_request_needs_the_token() {
    let (server, router, _work) = server("token", 1, 1000).await;
    let token = server.token().to_string();
    let get = |uri: String, header: Option<(&'static str, String)>| {
        let mut request = Request::builder().uri(uri);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    for uri in [
        "/",
        "/assets/app.js",
        "/api/config",
        "/api/jobs/0001/events",
    ] {
        let response = get(uri.into(), None).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
    let wrong = get("/api/zoo".into(), Some(("x-whittle-token", "0".repeat(32))))
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body = to_bytes(wrong.into_body(), usize::MAX).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("wrong token"));

    // The page with ?token= gets it back as a cookie; the cookie and the header work.
    let page = get(format!("/?token={token}"), None).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = page.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with(&format!("whittle_token={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    let via_cookie = get(
        "/assets/app.js".into(),
        Some(("cookie", format!("whittle_token={token}"))),
    );
    assert_eq!(via_cookie.await.unwrap().status(), StatusCode::OK);
    let bearer = get(
        "/api/zoo".into(),
        Some(("authorization", format!("Bearer {token}"))),
    );
    assert_eq!(bearer.await.unwrap().status(), StatusCode::OK);
    let (status, zoo) = call(&router, &token, Method::GET, "/api/zoo", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = zoo["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, whittle_zoo::names());
}

#[tokio::test]
async fn paths_outside_the_allowed_folders_are_refused() {
    let (server, router, _work) = server("paths", 1, 1000).await;
    let token = server.token();
    let elsewhere = scratch("ui-outside");
    let outside = elsewhere.join("model.onnx");
    std::fs::write(&outside, whittle_zoo::build("mlp").unwrap().to_bytes()).unwrap();
    let path = outside.display().to_string();
    let uri = format!("/api/inspect?model={path}");
    let (status, body) = call(&router, token, Method::GET, &uri, Value::Null).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error(&body).contains(&format!("model: {path} is outside the allowed folders")),
        "{body}"
    );
    assert!(error(&body).contains("--allow DIR"), "{body}");

    // In a form and in a recipe, including a dataset SPEC's folder and `..` tricks.
    let form = json!({ "form": { "model": path, "data": mnist(), "optimize": true } });
    let (status, body) = call(&router, token, Method::POST, "/api/jobs", form).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).starts_with("recipe.model: "), "{body}");
    let sneaky = format!("{}/../../../../etc", whittle_data::assets_dir().display());
    let recipe = json!({ "recipe": { "model": "zoo:mlp",
        "steps": [{ "step": "quantize", "calib_data": format!("mnist:{sneaky}") }] } });
    let (status, body) = call(&router, token, Method::POST, "/api/jobs", recipe).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error(&body).starts_with("recipe.steps[1].calib_data: "),
        "{body}"
    );
    // The auto and continual forms too.
    let auto = json!({ "auto": { "model": path, "data": mnist(), "target": "size" } });
    let (status, body) = call(&router, token, Method::POST, "/api/jobs", auto).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).starts_with("model: "), "{body}");
    let auto = json!({ "auto": { "model": "zoo:mlp", "data": mnist(),
        "eval_data": format!("mnist:{sneaky}"), "target": "size" } });
    let (status, body) = call(&router, token, Method::POST, "/api/jobs", auto).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).starts_with("eval_data: "), "{body}");
    let continual =
        json!({ "continual": { "model": "zoo:mlp", "data": format!("mnist:{sneaky}") } });
    let (status, body) = call(&router, token, Method::POST, "/api/jobs", continual).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).starts_with("recipe.evaluate.data: "), "{body}");

    // Inside the work folder (relative paths start there) the same model is inspected.
    let inside = server.allowed()[0].join("mlp.onnx");
    std::fs::write(&inside, whittle_zoo::build("mlp").unwrap().to_bytes()).unwrap();
    let (status, body) = call(
        &router,
        token,
        Method::GET,
        "/api/inspect?model=mlp.onnx",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let model = whittle_zoo::build("mlp").unwrap();
    assert_eq!(
        body["parameters"],
        whittle_ir::cost::parameter_count(model.graph())
    );
    assert_eq!(body["size_bytes"], model.encoded_len());
    assert_eq!(body["inputs"][0]["name"], "input");
    assert_eq!(body["outputs"][0]["name"], "logits");
    assert_eq!(body["ops"]["Gemm"], model.count_op("Gemm"));
}

/// Posts `bytes` as the upload `name`.
async fn upload(router: &Router, token: &str, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/upload?name={name}"))
        .header("x-whittle-token", token)
        .body(Body::from(bytes))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn uploads_are_limited_named_and_checked() {
    let model = whittle_zoo::build("mlp:hidden=8").unwrap().to_bytes();
    let (server, router, _work) = server("upload", 1, model.len() + 10).await;
    let token = server.token();
    let (status, body) = upload(&router, token, "big.onnx", vec![0; model.len() + 11]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(error(&body).contains("larger than the limit"), "{body}");
    let (status, body) = upload(&router, token, "..%2Fescape.onnx", model.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("no folders"), "{body}");
    let (status, body) = upload(&router, token, "junk.onnx", b"not a model".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error(&body).contains("upload junk.onnx: not an ONNX model"),
        "{body}"
    );
    let (status, body) = upload(&router, token, "mlp.onnx", model.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let saved = PathBuf::from(body["path"].as_str().unwrap());
    assert_eq!(saved, server.allowed()[0].join("uploads/mlp.onnx"));
    assert_eq!(std::fs::read(saved).unwrap(), model);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let (server, router, _work) = server("bad", 1, 1000).await;
    let token = server.token();
    let cases = [
        (
            json!({ "form": { "model": "zoo:mlp", "data": mnist(), "sparsity": 1.5 } }),
            "sparsity: 1.5 is not in [0, 1)",
        ),
        (
            json!({ "form": { "model": "zoo:mlp", "data": mnist() } }),
            "form: nothing to do",
        ),
        (
            json!({ "form": { "model": "zoo:mlp", "data": mnist(), "colour": 1 } }),
            "unknown field `colour`",
        ),
        (
            json!({ "form": { "model": "zoo:mlp", "data": mnist(), "finetune_epochs": "two" } }),
            "finetune_epochs: invalid type",
        ),
        (json!({}), "give exactly one of `recipe`"),
        (
            json!({ "recipe": { "model": "zoo:mlp", "steps": [{ "step": "optimize", "pases": [] }] } }),
            "steps[1] (optimize): unknown field `pases`",
        ),
        (
            json!({ "recipe": { "model": "zoo:nosuch", "steps": [{ "step": "optimize" }] } }),
            "zoo:nosuch",
        ),
        (
            json!({ "recipe": { "model": "zoo:mlp", "output": "x.onnx", "steps": [] } }),
            "`output` is not taken",
        ),
        (
            json!({ "auto": { "model": "zoo:mlp", "data": mnist(), "target": "fast" } }),
            "target: unknown target 'fast'",
        ),
        (
            json!({ "auto": { "model": "zoo:mlp", "data": mnist(), "target": "size",
                              "max_accuracy_drop": 101 } }),
            "max_accuracy_drop: must be between 0 and 100 points, got 101",
        ),
        (
            json!({ "auto": { "model": "zoo:mlp", "data": mnist(), "target": "size",
                              "budget": "soon" } }),
            "budget: ",
        ),
        (
            json!({ "auto": { "model": "zoo:mlp", "data": mnist(), "target": "size",
                              "max_trials": 0 } }),
            "max_trials: must be at least 1",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "epochs_per_task": 0 } }),
            "epochs_per_task: 0 is not in 1..=100",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "prune": 1.5 } }),
            "prune: 1.5 is not in (0, 1)",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "scenario": "domain-il" } }),
            "tasks: a domain-il scenario needs the number of tasks",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "compress_during": true } }),
            "compress_during: choose what to compress",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "lr_schedule": "steps" } }),
            "lr_schedule: steps: choose constant or cosine",
        ),
        (
            json!({ "continual": { "model": "zoo:mlp", "data": mnist(), "strategy": "magic" } }),
            "magic",
        ),
        (
            json!({ "form": { "model": "zoo:mlp", "data": mnist(), "optimize": true },
                    "auto": { "model": "zoo:mlp", "data": mnist(), "target": "size" } }),
            "give exactly one of",
        ),
    ];
    for (body, needle) in cases {
        let (status, answer) = call(&router, token, Method::POST, "/api/jobs", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert!(error(&answer).contains(needle), "{body} -> {answer}");
    }
    let lenet = whittle_data::assets_dir().join("models/mnist_lenet5.onnx");
    let form = json!({ "form": { "model": lenet, "data": mnist(), "train_epochs": 1 } });
    let (status, answer) = call(&router, token, Method::POST, "/api/jobs", form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&answer).starts_with("train_epochs: training from scratch is for zoo models"));
    let (status, answer) = call(&router, token, Method::GET, "/api/jobs/9999", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&answer), "no job \"9999\"");
}

/// A small job: zoo:mlp trained one epoch on 2048 MNIST images, optimized, quantized.
fn small_job() -> Value {
    json!({ "form": { "model": "zoo:mlp:hidden=32", "data": mnist(), "train_epochs": 1,
        "train_limit": 2048, "optimize": true, "precision": "int8", "eval_samples": 200 } })
}

async fn wait_done(router: &Router, token: &str, id: &str) -> JobView {
    let start = Instant::now();
    loop {
        let (_, body) = call(
            router,
            token,
            Method::GET,
            &format!("/api/jobs/{id}"),
            Value::Null,
        )
        .await;
        let view: JobView = serde_json::from_value(body).unwrap();
        if matches!(view.status, Status::Done | Status::Failed) {
            return view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job {id} still {:?}",
            view.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_streams_events_and_ends_with_its_card_model_and_report() {
    let (server, router, _work) = server("job", 1, 1000).await;
    let token = server.token().to_string();
    let submitted = Instant::now();
    let (status, created) = call(&router, &token, Method::POST, "/api/jobs", small_job()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // One job at a time: a second one is refused while the first runs.
    let (status, busy) = call(&router, &token, Method::POST, "/api/jobs", small_job()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{busy}");
    assert!(error(&busy).contains("1 jobs are running"), "{busy}");

    // No model or report before the job is done.
    let early = format!("/api/jobs/{id}/report");
    let (status, body) = call(&router, &token, Method::GET, &early, Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).starts_with(&format!("job {id} has no report.html yet (status ")));

    let request = Request::builder()
        .uri(format!("/api/jobs/{id}/events"))
        .header("x-whittle-token", &token)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut stream = response.into_body().into_data_stream();
    let mut events: Vec<Value> = Vec::new();
    let mut first_pipeline_event = None;
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let event: Value = serde_json::from_str(data).unwrap();
            if event["event"] != "status" && first_pipeline_event.is_none() {
                first_pipeline_event = Some(submitted.elapsed());
            }
            events.push(event);
        }
    }
    let first = first_pipeline_event.expect("no pipeline event");
    assert!(
        first < Duration::from_secs(1),
        "first progress event after {first:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let epochs = events
        .iter()
        .filter(|e| e["event"] == "begin" && e["task"] == "epoch 1/1")
        .count();
    assert_eq!(epochs, 1, "one event per epoch: {events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "done", "{last}");
    assert_eq!(last["status"], "done", "{last}");

    let view = wait_done(&router, &token, &id).await;
    assert_eq!(view.status, Status::Done, "{:?}", view.error);
    let card: Card = view.result.clone().unwrap();
    assert_eq!(serde_json::to_value(&card).unwrap(), last["result"]);
    let [before, after] = &card.metrics;
    // serde_json (without its float_roundtrip feature) may read a float 1 ulp off.
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() <= 1e-12 * b.abs();
    let (b, a) = (
        before.size_bytes.unwrap() as f64,
        after.size_bytes.unwrap() as f64,
    );
    assert!(
        close(card.size_reduction_pct, 100.0 * (1.0 - a / b)),
        "{card:?}"
    );
    assert!(
        card.size_reduction_pct.unwrap() > 50.0,
        "INT8 is under half the size: {card:?}"
    );
    assert!(close(card.before.size_mb, b / 1e6), "{card:?}");
    assert_eq!(card.after.accuracy, after.top1);
    assert!(after.top1.unwrap() > 0.5, "{card:?}");
    assert_eq!(after.samples, Some(200));
    let (x, y) = (
        before.latency_ms_ort.unwrap(),
        after.latency_ms_ort.unwrap(),
    );
    assert!(close(card.speedup, x / y), "{card:?}");
    assert!(close(card.after.fps, 1000.0 / y), "{card:?}");

    let get = |path: String| {
        let request = Request::builder()
            .uri(path)
            .header("x-whittle-token", &token);
        router.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let model = get(format!("/api/jobs/{id}/model")).await.unwrap();
    assert_eq!(model.status(), StatusCode::OK);
    let bytes = to_bytes(model.into_body(), usize::MAX).await.unwrap();
    assert_eq!(bytes.len() as u64, after.size_bytes.unwrap());
    let model = whittle_ir::Model::from_bytes(&bytes, None).unwrap();
    assert!(model
        .graph()
        .node
        .iter()
        .any(|n| n.op_type == "QuantizeLinear"));
    let report = get(format!("/api/jobs/{id}/report")).await.unwrap();
    assert_eq!(report.status(), StatusCode::OK);
    let html = to_bytes(report.into_body(), usize::MAX).await.unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains(&format!("whittle ui job {id}")));

    // Finished, the slot is free again; a late stream replays the history and ends.
    let (status, _) = call(&router, &token, Method::POST, "/api/jobs", small_job()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, replay) = call(&router, &token, Method::GET, "/api/jobs", Value::Null).await;
    assert_eq!(replay.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_non_loopback_host_binds_with_a_warning_and_an_unknown_one_is_named() {
    let work = scratch("ui-api-host");
    let options = |host: &str| Options {
        host: host.into(),
        port: 0,
        work_dir: work.to_path_buf(),
        allow: Vec::new(),
        max_jobs: 1,
        max_upload_bytes: 1000,
        assets: whittle_data::assets_dir(),
    };
    let loopback = Server::bind(&options("127.0.0.1")).await.unwrap();
    assert!(loopback.warning.is_none());
    assert!(loopback.url().starts_with("http://127.0.0.1:"));
    assert!(loopback
        .url()
        .ends_with(&format!("/?token={}", loopback.token())));
    let open = Server::bind(&options("0.0.0.0")).await.unwrap();
    let warning = open.warning.clone().expect("no warning for 0.0.0.0");
    assert!(
        warning.starts_with("--host 0.0.0.0 is not loopback"),
        "{warning}"
    );
    let named = Server::bind(&options("localhost")).await.unwrap();
    assert!(named.warning.is_none(), "localhost is loopback");
    let Err(e) = Server::bind(&options("no.such.host.invalid")).await else {
        panic!("an unknown host was bound");
    };
    assert!(
        e.to_string()
            .starts_with("--host no.such.host.invalid --port 0"),
        "{e}"
    );
    // Each server has its own random token.
    assert_ne!(loopback.token(), open.token());
    assert_eq!(loopback.token().len(), 32);
}

/// The events a finished job's stream replays (it ends with `done`), checked to hold a
/// `begin` of the pipeline's progress and to end with `done` carrying `details`.
async fn replayed_events(router: &Router, token: &str, id: &str, details: &Value) {
    let request = Request::builder()
        .uri(format!("/api/jobs/{id}/events"))
        .header("x-whittle-token", token);
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let events: Vec<Value> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["event"] == "begin"),
        "no progress: {events:?}"
    );
    let done = events.last().expect("events");
    assert_eq!(done["event"], "done");
    assert_eq!(&done["details"], details);
}

/// The job `id`'s report page, checked to hold each plot of `plots`.
async fn report_with_plots(router: &Router, token: &str, id: &str, plots: &[&str]) -> String {
    let request = Request::builder()
        .uri(format!("/api/jobs/{id}/report"))
        .header("x-whittle-token", token);
    let report = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(report.status(), StatusCode::OK);
    let html = to_bytes(report.into_body(), usize::MAX).await.unwrap();
    let html = String::from_utf8_lossy(&html).to_string();
    for plot in plots {
        assert!(
            html.contains(&format!("id=\"plot-{plot}\"")),
            "no plot {plot} in the report"
        );
    }
    html
}

/// Writes `WORK/small.npz`: the first 1000 MNIST training and 500 test images.
fn small_mnist(work: &std::path::Path) -> String {
    mnist_npz::mnist_npz(work, 1000, 500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_job_ends_with_the_search_summary_card_and_pareto_plots() {
    let (server, router, _work) = server("auto", 1, 1000).await;
    let token = server.token().to_string();
    let data = small_mnist(&server.allowed()[0]);
    let lenet = whittle_data::assets_dir().join("models/mnist_lenet5.onnx");
    let form = json!({ "auto": { "model": lenet, "data": data, "target": "size",
        "max_accuracy_drop": 1.0, "max_trials": 3, "finetune_epochs": 0, "seed": 0 } });
    let (status, body) = call(&router, &token, Method::POST, "/api/jobs", form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = wait_done(&router, &token, &id).await;
    assert_eq!(view.status, Status::Done, "{:?}", view.error);
    assert_eq!(view.recipe["auto"]["target"], "size");
    let summary = view.details.expect("the auto summary");
    assert_eq!(summary["trials"], 3, "{summary:#}");
    assert_eq!(summary["history"].as_array().unwrap().len(), 3);
    replayed_events(&router, &token, &id, &summary).await;
    let card: Card = view.result.expect("a card");
    let (base, best) = (&summary["baseline"], &summary["best"]);
    assert!(best.is_object(), "a trial gave a model: {summary:#}");
    // The card's figures are the search's own measurements of the baseline and the best.
    for (side, figures) in [(&card.metrics[0], base), (&card.metrics[1], best)] {
        assert_eq!(side.top1, figures["accuracy"].as_f64(), "{figures}");
        assert_eq!(side.size_bytes, figures["size_bytes"].as_u64(), "{figures}");
        assert_eq!(
            side.latency_ms_ort,
            figures["latency_ms"].as_f64(),
            "{figures}"
        );
        assert_eq!(side.parameters, figures["parameters"].as_u64(), "{figures}");
    }
    let (b, a) = (
        base["size_bytes"].as_f64().unwrap(),
        best["size_bytes"].as_f64().unwrap(),
    );
    assert!(a < b, "the size target made the model smaller: {a} vs {b}");
    assert!((card.size_reduction_pct.unwrap() - 100.0 * (1.0 - a / b)).abs() < 1e-9);
    // The downloaded model is the best one.
    let request = Request::builder()
        .uri(format!("/api/jobs/{id}/model"))
        .header("x-whittle-token", &token);
    let model = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(model.status(), StatusCode::OK);
    let bytes = to_bytes(model.into_body(), usize::MAX).await.unwrap();
    assert_eq!(bytes.len() as u64, best["size_bytes"].as_u64().unwrap());
    report_with_plots(
        &router,
        &token,
        &id,
        &["search-size-latency", "search-latency-accuracy"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continual_job_ends_with_its_r_matrix_card_and_heat_map() {
    let (server, router, _work) = server("continual", 1, 1000).await;
    let token = server.token().to_string();
    let form = json!({ "continual": { "model": "zoo:mlp:hidden=64", "data": mnist(),
        "scenario": "class-il", "tasks": 3, "strategy": "er", "buffer": 200,
        "epochs_per_task": 1, "seeds": [0], "train_samples": 2000, "test_samples": 500,
        "replay_augment": true, "ncm": true, "lr_schedule": "cosine" } });
    let (status, body) = call(&router, &token, Method::POST, "/api/jobs", form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let view = wait_done(&router, &token, &id).await;
    assert_eq!(view.status, Status::Done, "{:?}", view.error);
    assert_eq!(view.recipe["steps"][0]["step"], "continual");
    let training = &view.recipe["steps"][0]["training"];
    assert_eq!(training["replay_augment"], true);
    assert_eq!(training["ncm"], true);
    assert_eq!(training["schedule"]["kind"], "warmup-cosine");
    let details = view.details.expect("the continual report");
    replayed_events(&router, &token, &id, &details).await;
    // The details are the continual step's own report, as the library returned it.
    let steps = view.steps.expect("the steps");
    assert_eq!(details, steps[0]["report"]["details"]);
    let r = details["r_matrix"].as_array().expect("an R matrix");
    assert_eq!(r.len(), 3, "{details:#}");
    assert!(r.iter().all(|row| row.as_array().unwrap().len() == 3));
    let last: Vec<f64> = r[2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let average = details["average_accuracy"].as_f64().unwrap();
    assert!(
        (average - last.iter().sum::<f64>() / 3.0).abs() < 1e-9,
        "{details:#}"
    );
    assert!(average > 0.2, "{details:#}");
    // The card's "after" is the final model measured on the 500 test samples.
    let card: Card = view.result.expect("a card");
    assert_eq!(card.metrics[1].samples, Some(500));
    assert_eq!(card.after.accuracy, steps[0]["metrics"]["top1"].as_f64());
    let html = report_with_plots(
        &router,
        &token,
        &id,
        &["continual-r-matrix", "continual-over-time"],
    )
    .await;
    assert!(html.contains("whittle ui job"));
}
