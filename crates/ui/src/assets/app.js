// whittle ui: the page's script. Everything goes through the same JSON API the tests use;
// the token travels as the cookie set when the page was opened with ?token=.
"use strict";

const $ = (id) => document.getElementById(id);
let stream = null;

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function option(list, value, label) {
  const o = document.createElement("option");
  o.value = value;
  if (label) o.textContent = label;
  list.appendChild(o);
}

async function loadChoices() {
  const config = await api("/api/config");
  config.models.forEach((m) => option($("model-options"), m));
  config.datasets.forEach((d) => option($("data-options"), d));
  if (!$("data").value && config.datasets.length) $("data").value = config.datasets[0];
  $("auto-section").hidden = !config.forms.auto;
  $("continual-section").hidden = !config.forms.continual;
  const zoo = await api("/api/zoo");
  zoo.models.forEach((m) => {
    option($("zoo"), m.spec, `${m.name}: ${m.summary}`);
    option($("model-options"), m.spec);
  });
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  try {
    showError("");
    const name = encodeURIComponent(file.name);
    const done = await api(`/api/upload?name=${name}`, { method: "POST", body: file });
    $("model").value = done.path;
  } catch (e) {
    showError(e.message);
  }
}

async function inspect() {
  try {
    showError("");
    const info = await api(`/api/inspect?model=${encodeURIComponent($("model").value)}`);
    const ports = (ps) => ps.map((p) => `${p.name}: ${p.dtype}[${p.shape.join(",")}]`).join(", ");
    const ops = Object.entries(info.ops).map(([op, n]) => `${op} ×${n}`).join(", ");
    const rows = [
      ["inputs", ports(info.inputs)], ["outputs", ports(info.outputs)],
      ["operators", `${info.nodes} nodes: ${ops}`], ["parameters", info.parameters],
      ["size", `${(info.size_bytes / 1e6).toFixed(3)} MB`], ["MACs", info.macs],
    ];
    const table = document.createElement("table");
    rows.forEach(([k, v]) => {
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = v;
    });
    $("inspection").replaceChildren(table);
    $("inspection").hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

function number(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function text(id) {
  const value = $(id).value.trim();
  return value === "" ? null : value;
}

// The fields of each form (besides the model and data above), keyed as the API takes them.
const FORMS = {
  form: () => ({
    optimize: $("optimize").checked, precision: $("precision").value,
    sparsity: number("sparsity") ?? 0, finetune_epochs: number("finetune_epochs") ?? 0,
    train_epochs: number("train_epochs") ?? 0, train_limit: number("train_limit"),
    eval_samples: number("eval_samples") ?? 1000, seed: number("seed") ?? 0,
  }),
  auto: () => ({
    target: $("auto-target").value, eval_data: text("auto-eval_data"),
    max_accuracy_drop: number("auto-max_accuracy_drop") ?? 1,
    max_latency_ms: number("auto-max_latency_ms"), max_size_mb: number("auto-max_size_mb"),
    max_trials: number("auto-max_trials"), budget: text("auto-budget"),
    finetune_epochs: number("auto-finetune_epochs") ?? 1, seed: number("auto-seed") ?? 0,
  }),
  continual: () => ({
    scenario: $("cont-scenario").value, tasks: number("cont-tasks"),
    strategy: $("cont-strategy").value, ace: $("cont-ace").checked,
    ncm: $("cont-ncm").checked,
    replay_augment: $("cont-replay_augment").checked, lr_schedule: $("cont-lr_schedule").value,
    buffer: number("cont-buffer") ?? 500,
    epochs_per_task: number("cont-epochs_per_task") ?? 1,
    seeds: $("cont-seeds").value.split(",").map((s) => s.trim()).filter((s) => s).map(Number),
    train_samples: number("cont-train_samples"), test_samples: number("cont-test_samples"),
    quantize: ["fp16", "int8"].filter((p) => $(`cont-${p}`).checked),
    prune: number("cont-prune"), compress_during: $("cont-compress_during").checked,
  }),
};

// Submits the form `kind` (a key of FORMS) as a job and follows it.
async function submit(kind, event) {
  event.preventDefault();
  showError("");
  const fields = { model: $("model").value.trim(), data: $("data").value.trim(), ...FORMS[kind]() };
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ [kind]: fields }),
    });
    // The hash names the job, so a reload re-attaches; its change attaches now.
    if (location.hash === `#job=${job.id}`) attach(job.id);
    else location.hash = `job=${job.id}`;
  } catch (e) {
    showError(e.message);
  }
}

function log(text, level) {
  const li = document.createElement("li");
  li.textContent = text;
  if (level) li.className = level;
  $("log").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

// Follows job `id`: its past events first (so a reloaded page catches up), then live ones.
function attach(id) {
  if (stream) stream.close();
  $("job").hidden = false;
  $("result").hidden = true;
  $("report-frame").hidden = true;
  $("report-frame").removeAttribute("src");
  $("job-id").textContent = `(job ${id})`;
  $("log").replaceChildren();
  $("job").dataset.events = "0";
  stream = new EventSource(`/api/jobs/${id}/events`);
  stream.onmessage = (message) => {
    const e = JSON.parse(message.data);
    $("job").dataset.events = String(Number($("job").dataset.events) + 1);
    $("job").dataset.lastEvent = e.event;
    if (e.event === "begin") {
      $("task").textContent = e.task;
      $("bar").max = e.total || 1;
      $("bar").value = 0;
    } else if (e.event === "progress") {
      $("bar").value = e.done;
      $("task").textContent = `${$("task").textContent.split(" · ")[0]}${e.message ? " · " + e.message : ""}`;
    } else if (e.event === "log") {
      if (e.message.endsWith(": running")) $("step").textContent = e.message;
      log(e.message, e.level);
    } else if (e.event === "status") {
      log(`job ${e.status}`);
    } else if (e.event === "done") {
      stream.close();
      stream = null;
      finished(id);
    }
  };
}

function cell(id, value, digits, suffix) {
  const td = $(id);
  td.dataset.value = value === null || value === undefined ? "" : String(value);
  td.textContent = value === null || value === undefined ? "–" : value.toFixed(digits) + (suffix || "");
}

async function finished(id) {
  try {
    const job = await api(`/api/jobs/${id}`);
    refreshJobs();
    if (job.status !== "done") {
      showError(`job ${id} failed: ${job.error}`);
      return;
    }
    const r = job.result;
    for (const side of ["before", "after"]) {
      cell(`${side}-size_mb`, r[side].size_mb, 4);
      cell(`${side}-fps`, r[side].fps, 1);
      cell(`${side}-accuracy`, r[side].accuracy === null ? null : r[side].accuracy * 100, 2, "%");
      $(`${side}-accuracy`).dataset.value = String(r[side].accuracy ?? "");
    }
    cell("size_reduction_pct", r.size_reduction_pct, 1, "% smaller");
    cell("speedup", r.speedup, 2, "× faster");
    const drop = r.after.accuracy !== null && r.before.accuracy !== null
      ? (r.after.accuracy - r.before.accuracy) * 100 : null;
    cell("accuracy_change", drop, 2, " points");
    $("details").textContent = describe(job.details);
    $("model-link").href = `/api/jobs/${id}/model`;
    $("report-link").href = `/api/jobs/${id}/report`;
    // Auto and continual jobs show their report's plots (Pareto fronts, the R matrix).
    if (job.details) {
      $("report-frame").src = `/api/jobs/${id}/report`;
      $("report-frame").hidden = false;
    }
    $("result").dataset.job = id;
    $("result").hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(2)}%`);

// One line of an auto job's summary or a continual job's report (empty for other jobs).
function describe(d) {
  if (!d) return "";
  if (d.history) {
    const best = d.best ? `best: ${d.best.name} (trial ${d.best.trial} of ${d.trials})` : "no candidate gave a model";
    return `${best}; status ${d.status}; ${d.stopped}`;
  }
  return `${d.scenario} ${d.strategy}: average accuracy ${pct(d.average_accuracy)}, ` +
    `forgetting ${(d.forgetting * 100).toFixed(1)} points over ${d.seeds.length} seed(s)`;
}

async function refreshJobs() {
  const jobs = await api("/api/jobs");
  $("jobs").replaceChildren(...jobs.map((job) => {
    const li = document.createElement("li");
    const open = document.createElement("a");
    open.href = `#job=${job.id}`;
    const model = job.recipe.model ?? job.recipe.auto?.model;
    const kind = job.recipe.auto ? "auto" : job.recipe.steps?.[0]?.step === "continual" ? "continual" : "compress";
    open.textContent = `job ${job.id}: ${kind} ${model} (${job.status})`;
    li.appendChild(open);
    if (job.status === "done") {
      const report = document.createElement("a");
      report.href = `/api/jobs/${job.id}/report`;
      report.target = "_blank";
      report.textContent = "report";
      li.append(" · ");
      li.appendChild(report);
    }
    return li;
  }));
}

function fromHash() {
  const match = location.hash.match(/job=([\w-]+)/);
  if (match) attach(match[1]);
}

window.addEventListener("hashchange", fromHash);
window.addEventListener("DOMContentLoaded", () => {
  $("compress").addEventListener("submit", (e) => submit("form", e));
  $("auto").addEventListener("submit", (e) => submit("auto", e));
  $("continual").addEventListener("submit", (e) => submit("continual", e));
  $("upload").addEventListener("change", upload);
  $("inspect").addEventListener("click", inspect);
  $("zoo").addEventListener("change", () => { if ($("zoo").value) $("model").value = $("zoo").value; });
  loadChoices().catch((e) => showError(e.message));
  refreshJobs().catch((e) => showError(e.message));
  fromHash();
});
