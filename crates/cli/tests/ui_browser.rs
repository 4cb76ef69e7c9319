//! `whittle ui` in a real headless browser (Debian's chromium and chromium-driver over
//! WebDriver): the release binary serves the page from an empty folder; bad form input
//! shows its message; the compress form runs LeNet5 (pruning, one fine-tune epoch on an
//! MNIST subset, optimization, INT8), a reload during the job re-attaches to its progress,
//! and the result card shows the JSON API's numbers, which equal `whittle pipeline --json`
//! on the same recipe and seed. Every resource comes from the server's origin; a
//! screenshot is saved under target/.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use whittle_testkit::scratch;

/// Kills the process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `whittle ui` on a free port in the empty folder `dir`, and the URL it printed.
fn start_ui(dir: &Path) -> (Guard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["ui", "--port", "0", "--work-dir", "work"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run whittle ui");
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("whittle ui: open ")
        .unwrap_or_else(|| panic!("whittle ui printed {line:?}"))
        .to_string();
    (guard, url)
}

/// chromedriver on a free port, and the WebDriver client of a fresh headless chromium.
async fn browser(profile: &Path) -> (Guard, Client) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .spawn()
        .expect("chromedriver not found: apt-get install -y chromium chromium-driver");
    let driver = Guard(driver);
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,2000",
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), json!({ "args": args }));
    let client = poll(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .map_err(|e| format!("no WebDriver session: {e}"))
        },
    )
    .await;
    (driver, client)
}

/// Calls `attempt` every `pause` until it succeeds; panics with its last error after `limit`.
async fn poll<T, F, Fut>(limit: Duration, pause: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if start.elapsed() >= limit => panic!("after {limit:?}: {e}"),
            Err(_) => tokio::time::sleep(pause).await,
        }
    }
}

/// Evaluates `expression` in the page until it is truthy (at most `limit`), and returns it.
async fn until(client: &Client, expression: &str, limit: Duration) -> Value {
    let script = format!("return ({expression});");
    poll(limit, Duration::from_millis(50), || async {
        let value = client.execute(&script, vec![]).await.unwrap();
        let falsy = matches!(&value, Value::Null | Value::Bool(false))
            || value == json!(0)
            || value == json!("");
        match falsy {
            true => Err(format!("waited for {expression}")),
            false => Ok(value),
        }
    })
    .await
}

async fn fill(client: &Client, id: &str, text: &str) {
    let input = client.find(Locator::Id(id)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// The page's `fetch` of `path` (with its cookie) as text.
async fn fetch_text(client: &Client, path: &str) -> String {
    let script = "const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then((r) => r.text()).then(done);";
    let text = client
        .execute_async(script, vec![json!(path)])
        .await
        .unwrap();
    text.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compress_form_in_a_browser_matches_the_api_and_the_cli() {
    let started = Instant::now();
    let dir = scratch("browser");
    let (_server, url) = start_ui(&dir);
    let origin = url.split("/?").next().unwrap().to_string();
    let (_driver, client) = browser(&dir.join("profile")).await;
    client.goto(&url).await.unwrap();
    // The page fills the dataset from the assets folder once its config has loaded.
    let data = until(
        &client,
        "document.getElementById('data').value",
        Duration::from_secs(10),
    )
    .await;
    assert!(data.as_str().unwrap().starts_with("mnist:"), "{data}");
    // The model comes as an upload: it lands in the work folder and fills the model field.
    let lenet = whittle_data::assets_dir().join("models/mnist_lenet5.onnx");
    let upload = client.find(Locator::Id("upload")).await.unwrap();
    upload
        .send_keys(&lenet.display().to_string())
        .await
        .unwrap();
    let uploaded = until(
        &client,
        "document.getElementById('model').value",
        Duration::from_secs(10),
    )
    .await;
    let uploaded = PathBuf::from(uploaded.as_str().unwrap());
    assert_eq!(
        uploaded,
        dir.canonicalize()
            .unwrap()
            .join("work/uploads/mnist_lenet5.onnx")
    );
    assert_eq!(
        std::fs::read(&uploaded).unwrap(),
        std::fs::read(&lenet).unwrap()
    );

    // Bad input: the server's 400 message shows on the page.
    fill(&client, "sparsity", "1.5").await;
    client
        .find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let message = until(
        &client,
        "!document.getElementById('error').hidden && document.getElementById('error').textContent",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(message, "sparsity: 1.5 is not in [0, 1)");

    // The inspect panel shows the model's operators.
    client
        .find(Locator::Id("inspect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let inspection = until(&client, "!document.getElementById('inspection').hidden && document.getElementById('inspection').textContent", Duration::from_secs(10)).await;
    for shown in ["Conv ×2", "parameters648226", "input: float[N,1,28,28]"] {
        assert!(inspection.as_str().unwrap().contains(shown), "{inspection}");
    }

    fill(&client, "sparsity", "0.5").await;
    fill(&client, "finetune_epochs", "1").await;
    fill(&client, "train_limit", "4096").await;
    fill(&client, "eval_samples", "1000").await;
    fill(&client, "seed", "7").await;
    let precision = client.find(Locator::Id("precision")).await.unwrap();
    precision.select_by_value("int8").await.unwrap();
    client
        .find(Locator::Id("submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let id = until(
        &client,
        "(location.hash.match(/job=(\\w+)/) || [])[1]",
        Duration::from_secs(5),
    )
    .await;
    let id = id.as_str().unwrap().to_string();
    until(
        &client,
        "document.querySelectorAll('#log li').length > 1",
        Duration::from_secs(5),
    )
    .await;

    // Reload while the job runs: the page re-attaches and replays the job's events.
    let status: Value =
        serde_json::from_str(&fetch_text(&client, &format!("/api/jobs/{id}")).await).unwrap();
    assert_eq!(
        status["status"], "running",
        "the job ended before the reload"
    );
    client.refresh().await.unwrap();
    let first = until(
        &client,
        "document.querySelector('#log li') && document.querySelector('#log li').textContent",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        first, "job running",
        "the replay starts at the job's first event"
    );
    until(
        &client,
        "!document.getElementById('result').hidden",
        Duration::from_secs(150),
    )
    .await;
    let error = client
        .execute("return document.getElementById('error').hidden", vec![])
        .await
        .unwrap();
    assert_eq!(error, json!(true), "the page shows an error");
    let epochs = client.execute("return [...document.querySelectorAll('#log li')].filter((li) => li.textContent.startsWith('epoch 1/1')).length", vec![]).await.unwrap();
    assert_eq!(epochs, json!(1), "one line per fine-tune epoch");

    // The card's numbers are the API's, as JavaScript writes them.
    let cells = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/jobs/' + arguments[0]).then((r) => r.json()).then((job) => {
               const r = job.result, out = [];
               for (const side of ['before', 'after'])
                 for (const k of ['size_mb', 'fps', 'accuracy'])
                   out.push([side + '-' + k, document.getElementById(side + '-' + k).dataset.value, String(r[side][k])]);
               for (const k of ['size_reduction_pct', 'speedup'])
                 out.push([k, document.getElementById(k).dataset.value, String(r[k])]);
               done(out);
             });",
            vec![json!(id)],
        )
        .await
        .unwrap();
    for cell in cells.as_array().unwrap() {
        assert_eq!(
            cell[1], cell[2],
            "card cell {} differs from the API",
            cell[0]
        );
        assert_ne!(cell[1], "null", "card cell {} is empty", cell[0]);
    }

    // Every resource the page loaded came from the server's origin.
    let resources = client
        .execute(
            "return performance.getEntriesByType('resource').map((e) => e.name)
               .concat([...document.querySelectorAll('[src],[href]')].map((e) => e.src || e.href))",
            vec![],
        )
        .await
        .unwrap();
    let resources: Vec<&str> = resources
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        resources.iter().any(|r| r.ends_with("/assets/app.js")),
        "{resources:?}"
    );
    for resource in &resources {
        assert!(
            resource.starts_with(&origin),
            "{resource} is not from {origin}"
        );
    }
    let screenshot = client.screenshot().await.unwrap();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-browser");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("compress.png"), &screenshot).unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"));

    // The report page of the job is the pipeline's HTML report.
    let job: Value =
        serde_json::from_str(&fetch_text(&client, &format!("/api/jobs/{id}")).await).unwrap();
    client
        .goto(&format!("{origin}/api/jobs/{id}/report"))
        .await
        .unwrap();
    assert_eq!(
        client.title().await.unwrap(),
        format!("whittle ui job {id}")
    );
    client.close().await.unwrap();

    // The CLI on the same recipe and seed measures the same models.
    let recipe = dir.join("recipe.yaml");
    std::fs::write(&recipe, job["recipe"].to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(["pipeline", recipe.to_str().unwrap(), "-o"])
        .arg(dir.join("cli.onnx"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = &cli["report"]["models"];
    for (i, side) in ["input", "final"].iter().enumerate() {
        assert_eq!(models[i]["name"], *side);
        let (ui, cli) = (&job["result"]["metrics"][i], &models[i]["metrics"]);
        for key in [
            "size_bytes",
            "parameters",
            "macs",
            "top1",
            "top5",
            "samples",
        ] {
            assert_eq!(
                ui[key], cli[key],
                "{side} {key}: UI {} CLI {}",
                ui[key], cli[key]
            );
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(180),
        "the browser test took {took:?}"
    );
}
