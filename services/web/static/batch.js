// The batch page: submit a JSONL job, follow its progress (NDJSON stream), download the results.
"use strict";

window.batchState = { job: null, events: 0, finished: [], done: false, error: null };
const B = window.batchState;
let watching = null;        // AbortController of the current watch

async function loadVoices() {
  try {
    const data = await api("GET", "/api/voices");
    for (const v of data.voices) {
      const o = document.createElement("option");
      o.value = v.id;
      o.textContent = v.builtin ? v.name : `${v.name} (registered)`;
      $("voice").appendChild(o);
    }
  } catch (e) { $("submit-status").textContent = "voices: " + e.message; }
}

async function loadJobs() {
  try {
    const data = await api("GET", "/api/batches");
    $("jobs").querySelector("tbody").innerHTML = data.jobs.map((j) =>
      `<tr data-id="${escapeHtml(j.id)}" class="job-row"><td><a href="#" data-id="${escapeHtml(j.id)}">${escapeHtml(j.id.slice(0, 12))}…</a></td>` +
      `<td>${escapeHtml(j.name)}</td><td>${escapeHtml(j.state)}</td><td>${j.done + j.failed} / ${j.total}</td>` +
      `<td>${escapeHtml(j.created_at.replace("T", " ").slice(0, 19))}</td></tr>`).join("");
  } catch (e) { $("submit-status").textContent = "jobs: " + e.message; }
}
$("jobs").addEventListener("click", (ev) => {
  const id = ev.target.getAttribute("data-id");
  if (id) { ev.preventDefault(); watch(id); }
});

function showJob(job) {
  B.job = job;
  $("b-id").textContent = job.id.slice(0, 12) + "…";
  $("b-id").title = job.id;
  $("b-state").textContent = job.state;
  $("b-state").className = "v state-" + ({ running: "streaming", queued: "streaming", done: "done" }[job.state] || "error");
  $("b-done").textContent = job.done;
  $("b-failed").textContent = job.failed;
  $("b-total").textContent = job.total;
  $("b-audio").textContent = Number(job.audio_seconds).toFixed(1) + " s";
  $("bar-fill").style.width = (job.total ? (100 * (job.done + job.failed)) / job.total : 0) + "%";
  const ended = ["done", "cancelled", "failed"].includes(job.state);
  $("cancel").disabled = ended;
  $("download").disabled = job.done + job.failed === 0;
}

function addLines(lines) {
  const body = $("lines").querySelector("tbody");
  for (const l of lines) {
    B.finished.push(l);
    const ok = l.state === "BATCH_LINE_DONE";
    const tr = document.createElement("tr");
    const link = ok ? `<a href="#" data-uttid="${escapeHtml(l.uttid)}">${escapeHtml(l.uttid)}</a>` : escapeHtml(l.uttid);
    tr.innerHTML = `<td>${link}</td><td class="${ok ? "" : "error"}">${ok ? "done" : "failed"}</td>` +
      `<td>${Number(l.duration_s).toFixed(2)} s</td><td>${Number(l.real_time_factor).toFixed(2)}</td>` +
      `<td>${escapeHtml(ok ? l.normalized_text : l.error)}</td>`;
    body.appendChild(tr);
  }
}

async function saveBlob(url, filename) {
  const resp = await fetch(url, { headers: authHeaders() });
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(`${resp.status}: ${msg}`);
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await resp.blob());
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

$("lines").addEventListener("click", (ev) => {
  const uttid = ev.target.getAttribute("data-uttid");
  if (!uttid || !B.job) return;
  ev.preventDefault();
  saveBlob(`/api/batches/${B.job.id}/results/${encodeURIComponent(uttid)}.wav`, uttid + ".wav")
    .catch((e) => { $("job-status").textContent = e.message; });
});

async function watch(id) {
  if (watching) watching.abort();
  watching = new AbortController();
  Object.assign(B, { events: 0, finished: [], done: false, error: null });
  $("lines").querySelector("tbody").innerHTML = "";
  $("job-status").textContent = "";
  try {
    const resp = await fetch(`/api/batches/${id}/watch`, { headers: authHeaders(), signal: watching.signal });
    if (!resp.ok) throw new Error(`${resp.status}: ${(await resp.json()).error.message}`);
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        B.events++;
        showJob(ev.job);
        addLines(ev.finished || []);
      }
    }
    if (B.job && B.job.id === id && B.finished.length === 0 && B.job.done + B.job.failed > 0) {
      const job = await api("GET", `/api/batches/${id}?lines=1`);   // an old job: list its lines once
      addLines(job.lines.filter((l) => l.state !== "BATCH_LINE_PENDING"));
    }
    B.done = true;
    loadJobs();
  } catch (e) {
    if (e.name !== "AbortError") { B.error = e.message; $("job-status").textContent = e.message; }
  }
}

$("submit").addEventListener("click", async () => {
  const f = $("file").files[0];
  if (!f) { $("submit-status").textContent = "choose a JSONL file first"; return; }
  const q = new URLSearchParams({ name: $("name").value || f.name, voice: $("voice").value,
    sample_rate: $("sample-rate").value, speed: $("speed").value, seed: $("seed").value });
  try {
    const job = await api("POST", "/api/batches?" + q.toString(), await f.text(),
      { "Content-Type": "application/x-ndjson" });
    $("submit-status").textContent = `submitted ${job.id} (${job.total} lines)`;
    showJob(job);
    loadJobs();
    watch(job.id);
  } catch (e) {
    $("submit-status").textContent = e.message;
  }
});

$("cancel").addEventListener("click", async () => {
  if (!B.job) return;
  try { showJob(await api("POST", `/api/batches/${B.job.id}/cancel`)); } catch (e) { $("job-status").textContent = e.message; }
});
$("download").addEventListener("click", () => {
  if (B.job) saveBlob(`/api/batches/${B.job.id}/download`, B.job.id + ".zip").catch((e) => { $("job-status").textContent = e.message; });
});
$("refresh").addEventListener("click", loadJobs);

loadVoices();
loadJobs();
