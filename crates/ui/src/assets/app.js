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
    const m = info.metrics;
    const ports = (ps) => ps.map((p) => `${p.name}: ${p.type}`).join(", ");
    const ops = Object.entries(info.ops).map(([op, n]) => `${op} ×${n}`).join(", ");
    const rows = [
      ["inputs", ports(info.inputs)], ["outputs", ports(info.outputs)],
      ["operators", `${info.nodes} nodes: ${ops}`], ["parameters", m.parameters],
      ["size", `${(m.size_bytes / 1e6).toFixed(3)} MB`], ["MACs", m.macs],
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

async function submit(event) {
  event.preventDefault();
  showError("");
  const form = {
    model: $("model").value.trim(), data: $("data").value.trim(),
    optimize: $("optimize").checked, precision: $("precision").value,
    sparsity: number("sparsity") ?? 0, finetune_epochs: number("finetune_epochs") ?? 0,
    train_epochs: number("train_epochs") ?? 0, train_limit: number("train_limit"),
    eval_samples: number("eval_samples") ?? 1000, seed: number("seed") ?? 0,
  };
  try {
    const job = await api("/api/jobs", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ form }),
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
    $("model-link").href = `/api/jobs/${id}/model`;
    $("report-link").href = `/api/jobs/${id}/report`;
    $("result").dataset.job = id;
    $("result").hidden = false;
  } catch (e) {
    showError(e.message);
  }
}

async function refreshJobs() {
  const jobs = await api("/api/jobs");
  $("jobs").replaceChildren(...jobs.map((job) => {
    const li = document.createElement("li");
    const open = document.createElement("a");
    open.href = `#job=${job.id}`;
    open.textContent = `job ${job.id}: ${job.recipe.model} (${job.status})`;
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
  $("compress").addEventListener("submit", submit);
  $("upload").addEventListener("change", upload);
  $("inspect").addEventListener("click", inspect);
  $("zoo").addEventListener("change", () => { if ($("zoo").value) $("model").value = $("zoo").value; });
  loadChoices().catch((e) => showError(e.message));
  refreshJobs().catch((e) => showError(e.message));
  fromHash();
});
