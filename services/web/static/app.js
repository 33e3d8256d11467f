// The synthesis page: streams PCM16 over a WebSocket and plays each chunk with WebAudio as it arrives.
"use strict";

// Visible to tests and to the console: what has arrived and whether playback started.
window.ttsState = {
  state: "idle", chunks: 0, bytes: 0, audioMs: 0, firstChunkMs: null, scheduled: 0, playedChunks: 0,
  playbackStarted: false, audioContextState: null, segments: 0, resultUrl: null, error: null, summary: null,
  // alignment: entries received, the character highlighted now (-1: none), every character highlighted so far
  alignments: 0, speaking: -1, highlighted: [], interrupted: null, rejected: null,
};
const S = window.ttsState;

let refAudio = null;       // ArrayBuffer of WAV/MP3 bytes, or null
let ctx = null;            // AudioContext, created on the Start click (a user gesture)
let nextTime = 0;          // where the next chunk is scheduled on ctx's clock
let firstStartAt = null;
let ws = null;
let t0 = 0;
let totalSegments = 0;
let sources = [];          // scheduled chunks: {src, at, offsetMs, durationMs} (to map the clock to the stream's ms)
let timeline = [];         // alignment on ctx's clock: {start, end, t0, t1, silent}
let lastMeta = null;
let ended = false;         // "end" sent: no more text (the server then finishes with "done")

// ---- the spoken text, highlighted as it plays ---------------------------------------------------------------------
function renderSpoken(text) {
  const box = $("spoken");
  box.innerHTML = "";
  for (const ch of Array.from(text)) {      // code points, as the server's spans count them
    const span = document.createElement("span");
    span.textContent = ch;
    box.appendChild(span);
  }
}

// the stream's ms (offset_ms timeline) now playing: from the chunk whose time on ctx's clock holds now
function playedMs() {
  if (!ctx || !sources.length) return 0;
  const now = ctx.currentTime;
  let played = 0;
  for (const s of sources) {
    if (now >= s.at) played = Math.min(s.offsetMs + (now - s.at) * 1000, s.offsetMs + s.durationMs);
  }
  return played;
}

function highlight() {
  if (!ctx || !timeline.length) return;
  const now = ctx.currentTime;
  const chars = $("spoken").children;
  let speaking = -1;
  for (const e of timeline) {
    for (let i = e.start; i < e.end && i < chars.length; i++) {
      const on = !e.silent && now >= e.t0 && now < e.t1;
      chars[i].classList.toggle("now", on);
      if (now >= e.t0) chars[i].classList.add("said");
      if (on) {
        speaking = i;
        if (!S.highlighted.includes(i)) S.highlighted.push(i);
      }
    }
  }
  S.speaking = speaking;
}

function setState(state, message) {
  S.state = state;
  $("st-state").textContent = state;
  $("st-state").className = "v state-" + state;
  if (message !== undefined) $("message").textContent = message;
}

const ms = (v) => Math.round(Number(v || 0)) + " ms";

function render() {
  $("st-chunks").textContent = S.chunks;
  $("st-audio").textContent = Math.round(S.audioMs) + " ms";
  $("st-first").textContent = S.firstChunkMs == null ? "–" : Math.round(S.firstChunkMs) + " ms";
  // while streaming: segments spoken so far, of about as many as the page's own analysis found (the gateway may
  // merge or split them differently for its engine); once done, the server's count alone
  const done = S.state === "done" && S.summary;
  if (done) $("st-seg").textContent = String(S.summary.segments);
  else $("st-seg").textContent = totalSegments ? `${S.segments} of ~${totalSegments}` : (S.segments || "–");
  const pct = done ? 100 : (totalSegments ? Math.min(99, (100 * S.segments) / totalSegments) : 0);
  $("bar-fill").style.width = pct + "%";
}

// what the server's SynthesisSummary says (the WebSocket's "done" message): first audio at the gateway, stalls,
// the smallest playback margin, the engine and voice that spoke, the request id of the server's logs
function renderSummary(sum) {
  const dash = "–";
  $("st-first-server").textContent = sum ? ms(sum.first_chunk_latency_ms) : dash;
  $("st-stalls").textContent = sum ? `${sum.stalls || 0} · ${ms(sum.stall_ms)}` : dash;
  $("st-stalls").classList.toggle("bad", Boolean(sum && sum.stalls));
  $("st-margin").textContent = sum ? ms(sum.min_playback_margin_ms) : dash;
  $("st-margin").classList.toggle("bad", Boolean(sum && sum.min_playback_margin_ms < 0));
  $("st-engine").textContent = sum ? (sum.engine || dash) : dash;
  $("st-voice").textContent = sum ? (sum.voice || dash) : dash;
  $("st-rid").textContent = sum ? (sum.request_id || dash) : dash;
}

// ---- voices -----------------------------------------------------------------------------------------------------
let voiceLicenses = {}, defaultModel = "";

// the terms of the weights of the voice that will speak (the selected voice, else the model's, else the default's)
function showLicense() {
  const opt = $("voice").selectedOptions[0];
  const lic = (opt && opt.dataset.license) || voiceLicenses[$("model").value || defaultModel] || "";
  const el = $("voice-license");
  el.textContent = lic ? "licence: " + lic : "";
  el.classList.toggle("bad", /non-commercial/i.test(lic));
}

async function loadVoices() {
  const sel = $("voice");
  const keep = sel.value;
  try {
    const data = await api("GET", "/api/voices");
    sel.innerHTML = '<option value="">(server default)</option>';
    for (const v of data.voices) {
      const o = document.createElement("option");
      o.value = v.id;
      o.textContent = (v.builtin ? `${v.name} (${v.engine}` : `${v.name} — registered, ${v.engine}`) +
        (v.language ? `, ${v.language})` : ")");
      o.dataset.license = v.license || "";
      sel.appendChild(o);
    }
    sel.value = keep;
    voiceLicenses = Object.fromEntries(data.voices.map((v) => [v.engine, v.license || ""]));
    defaultModel = data.default_model || "";
    showLicense();
    const models = $("model");               // the engines the decoders serve, as the gateway lists them
    const keepModel = models.value;
    models.innerHTML = "";
    const def = document.createElement("option");
    def.value = "";
    def.textContent = data.default_model ? `${data.default_model} (server default)` : "(server default)";
    models.appendChild(def);
    for (const m of data.models || []) {
      if (m === data.default_model) continue;
      const o = document.createElement("option");
      o.value = o.textContent = m;
      models.appendChild(o);
    }
    models.value = [...models.options].some((o) => o.value === keepModel) ? keepModel : "";
  } catch (e) {
    $("message").textContent = "voices: " + e.message;
  }
}

// ---- reference audio: upload or record --------------------------------------------------------------------------
function setRef(buf, label, mime) {
  refAudio = buf;
  $("ref-status").textContent = buf ? `${label} (${(buf.byteLength / 1024).toFixed(0)} KiB): used instead of the voice` :
    "no reference audio: the voice above is used";
  const prev = $("ref-preview");
  if (buf) {
    prev.src = URL.createObjectURL(new Blob([buf], { type: mime || "audio/wav" }));
    prev.hidden = false;
  } else {
    prev.hidden = true;
    prev.removeAttribute("src");
  }
}

$("ref-file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (f) setRef(await f.arrayBuffer(), f.name, f.type);
});
$("clear-ref").addEventListener("click", () => { $("ref-file").value = ""; setRef(null); });

function encodeWav(samples, rate) {          // Float32Array mono → 16-bit PCM WAV
  const buf = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); str(36, "data");
  v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return buf;
}

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => parts.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      $("record").textContent = "● Record";
      // MediaRecorder gives webm/ogg; the speaker stage takes WAV: decode, downmix, resample to 16 kHz, encode
      const raw = await new Blob(parts).arrayBuffer();
      const decoded = await new AudioContext().decodeAudioData(raw);
      const off = new OfflineAudioContext(1, Math.ceil(decoded.duration * 16000), 16000);
      const src = off.createBufferSource();
      src.buffer = decoded;
      src.connect(off.destination);
      src.start();
      const rendered = await off.startRendering();
      setRef(encodeWav(rendered.getChannelData(0), 16000), `recording ${decoded.duration.toFixed(1)} s`);
    };
    recorder.start();
    $("record").textContent = "■ Stop recording";
  } catch (e) {
    $("ref-status").textContent = "recording failed: " + e.message;
  }
});

// ---- the frontend's view ----------------------------------------------------------------------------------------
function renderSegments(segments) {
  const box = $("segments");
  if (!segments.length) { box.innerHTML = '<p class="muted">no segments</p>'; return; }
  box.innerHTML = segments.map((seg) => {
    const words = seg.words.map((w) => {
      if (w.lang === "punct") return `<span class="punct">${escapeHtml(w.text)}</span>`;
      const chars = Array.from(w.text);
      let inner;
      // the engine-neutral reading: pinyin (spoken tones, an erhua 儿 is "r5") per character; an English word's
      // pronunciation in ARPAbet, piece by piece ("AY1 | F OW2 N")
      if (w.pinyin && w.pinyin.length === chars.length) {      // one reading per character, aligned
        inner = chars.map((c, i) => `<ruby>${escapeHtml(c)}<rt>${escapeHtml(w.pinyin[i])}</rt></ruby>`).join("");
      } else {
        const py = w.pinyin && w.pinyin.length ? w.pinyin.join(" ") : (w.lang === "en" ? w.phonemes : "");
        inner = `<ruby>${escapeHtml(w.text)}<rt>${escapeHtml(py)}</rt></ruby>`;
      }
      const title = w.lang === "en" && w.phonemes ? `en: ${w.phonemes}` : w.lang;
      return `<span class="word w-${w.lang}" title="${escapeHtml(title)}">${inner}</span>`;
    }).join("");
    return `<div class="segment" data-index="${seg.index}">
      <div class="seg-head"><span class="idx">#${seg.index}</span> <span class="orig">${escapeHtml(seg.text)}</span></div>
      <div class="norm">${escapeHtml(seg.normalized)}</div>
      <div class="words">${words}</div></div>`;
  }).join("");
}

async function analyze() {
  const text = $("text").value;
  const data = await api("POST", "/api/analyze", {
    text, language: $("language").value, phoneme_mode: $("phoneme-mode").checked,
  });
  renderSegments(data.segments);
  return data.segments;
}

$("analyze").addEventListener("click", () => analyze().catch((e) => { $("message").textContent = "analyze: " + e.message; }));

// ---- synthesis --------------------------------------------------------------------------------------------------
function playChunk(buf, rate) {
  const pcm = new Int16Array(buf);
  if (!pcm.length) return;
  const audio = ctx.createBuffer(1, pcm.length, rate);
  const ch = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = audio;
  src.connect(ctx.destination);
  const at = Math.max(nextTime, ctx.currentTime + 0.05);
  src.onended = () => { S.playedChunks++; };
  src.start(at);
  if (lastMeta) {
    sources.push({ src, at, offsetMs: lastMeta.offset_ms, durationMs: lastMeta.duration_ms });
    for (const a of lastMeta.alignment || []) {   // ms of the stream → ctx's clock, through this chunk's start
      timeline.push({ start: a.start, end: a.end, silent: a.silent,
                      t0: at + (a.start_ms - lastMeta.offset_ms) / 1000, t1: at + (a.end_ms - lastMeta.offset_ms) / 1000 });
      S.alignments++;
    }
  }
  if (firstStartAt === null) firstStartAt = at;
  nextTime = at + audio.duration;
  S.scheduled++;
}

function watchPlayback() {         // playback has started once ctx's clock passes the first chunk's start
  if (!ctx) return;
  S.audioContextState = ctx.state;
  if (firstStartAt !== null && ctx.state === "running" && ctx.currentTime >= firstStartAt) S.playbackStarted = true;
  highlight();
  // all the audio received has played and the last chunk ended a segment: nothing more to interrupt, end the stream
  // (if more audio was still coming, it still comes: "end" only says no more text will be sent)
  if (ws && !ended && lastMeta && lastMeta.segment_end && ctx.currentTime >= nextTime) endStream();
}
setInterval(watchPlayback, 30);

function endStream() {
  if (ws && ws.readyState === WebSocket.OPEN && !ended) {
    ended = true;
    ws.send(JSON.stringify({ type: "end" }));
  }
  $("interrupt").disabled = true;
}

function interrupt() {             // barge-in: stop the audio now, tell the server how much was played
  if (!ws || ended || !ctx) return;
  const played = playedMs();
  for (const s of sources) { try { s.src.stop(); } catch (e) { /* not started yet */ } }
  nextTime = ctx.currentTime;
  timeline = timeline.filter((e) => e.t1 <= ctx.currentTime);
  ws.send(JSON.stringify({ type: "cancel", played_ms: played }));
  $("interrupt").disabled = true;
}

function collectConfig() {
  const seed = $("seed").value.trim();
  const cfg = {
    type: "start", text: $("text").value, voice: $("voice").value, prompt_text: $("prompt-text").value,
    language: $("language").value, sample_rate: parseInt($("sample-rate").value, 10),
    chunk_size: parseInt($("chunk-size").value || "0", 10), speed: parseFloat($("speed").value || "1"),
    use_cache: $("use-cache").checked, phoneme_mode: $("phoneme-mode").checked, model: $("model").value,
    alignment: true, barge_in: true,       // per-character timing (highlighting); the stream stays open for Interrupt
  };
  if (seed !== "") cfg.seed = parseInt(seed, 10);
  // the audio itself follows the start message in binary frames (read by the server once the token is checked)
  if (refAudio) cfg.reference_audio_bytes = refAudio.byteLength;
  if (token()) cfg.token = token();
  return cfg;
}

async function start() {
  if (ws) return;
  Object.assign(S, { chunks: 0, bytes: 0, audioMs: 0, firstChunkMs: null, scheduled: 0, playedChunks: 0,
                     playbackStarted: false, segments: 0, resultUrl: null, error: null, summary: null,
                     alignments: 0, speaking: -1, highlighted: [], interrupted: null, rejected: null });
  totalSegments = 0;
  sources = [];
  timeline = [];
  lastMeta = null;
  ended = false;
  renderSpoken($("text").value);
  $("heard").hidden = true;
  $("result").hidden = true;
  $("st-rtf").textContent = "–";
  renderSummary(null);
  if (!ctx) ctx = new AudioContext();
  if (ctx.state === "suspended") await ctx.resume();
  nextTime = 0;
  firstStartAt = null;
  setState("connecting", "");
  render();
  const cfg = collectConfig();
  analyze().then((segs) => { totalSegments = segs.length; render(); })
    .catch((e) => { $("segments").innerHTML = `<p class="error">${escapeHtml(e.message)}</p>`; });

  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/api/synthesize`);
  ws.binaryType = "arraybuffer";
  let meta = null;
  t0 = performance.now();
  $("start").disabled = true;
  $("stop").disabled = false;
  $("interrupt").disabled = false;
  ws.onopen = () => {
    ws.send(JSON.stringify(cfg));
    if (refAudio) {
      for (let i = 0; i < refAudio.byteLength; i += 512 * 1024) ws.send(refAudio.slice(i, i + 512 * 1024));
    }
    setState("streaming");
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") {              // PCM16 of the chunk announced just before
      if (S.firstChunkMs === null) S.firstChunkMs = performance.now() - t0;
      S.chunks++;
      S.bytes += ev.data.byteLength;
      S.audioMs += meta ? meta.duration_ms : 0;
      if (meta && meta.segment_end) S.segments++;
      playChunk(ev.data, meta ? meta.sample_rate : 24000);
      render();
      return;
    }
    const msg = JSON.parse(ev.data);
    if (msg.type === "chunk") {
      meta = lastMeta = msg;
    } else if (msg.type === "interrupted") {
      S.interrupted = msg;
      const chars = $("spoken").children;
      const heardEnd = msg.heard_span ? msg.heard_span.end : 0;
      for (let i = heardEnd; i < chars.length; i++) { chars[i].classList.remove("now", "said"); chars[i].classList.add("unheard"); }
      $("heard").textContent = `interrupted at ${Math.round(msg.played_ms)} ms — heard: “${msg.heard_text}”`;
      $("heard").hidden = false;
      endStream();                  // nothing more to say on this stream: the server finishes with "done"
    } else if (msg.type === "rejected") {
      S.rejected = msg;
      $("message").textContent = msg.message;
    } else if (msg.type === "done") {
      S.summary = msg.summary;
      S.resultUrl = msg.result.url;
      S.segments = msg.summary.segments;
      $("st-rtf").textContent = Number(msg.summary.real_time_factor || 0).toFixed(2);
      renderSummary(msg.summary);
      // results are served only to the caller that made them: fetch with the token, offer the blob
      $("result-link").href = "#";
      $("result-link").dataset.url = msg.result.url;
      fetch(msg.result.url, { headers: authHeaders() }).then((r) => (r.ok ? r.blob() : null)).then((blob) => {
        if (blob) $("result-link").href = URL.createObjectURL(blob);
      });
      $("result-info").textContent = `${(msg.result.bytes / 1024).toFixed(0)} KiB · ` +
        `${(Number(msg.summary.audio_ms || 0) / 1000).toFixed(1)} s of audio`;
      $("result").hidden = false;
      setState("done", "");
      render();
    } else if (msg.type === "error") {
      S.error = msg;
      setState("error", `${msg.status} ${msg.code}: ${msg.message}`);
    } else if (msg.type === "stopped") {
      setState("stopped", "stopped");
    }
  };
  ws.onclose = () => {
    if (S.state === "streaming" || S.state === "connecting") setState("error", "connection closed");
    ws = null;
    $("start").disabled = false;
    $("stop").disabled = true;
    $("interrupt").disabled = true;
  };
}

$("start").addEventListener("click", () => start().catch((e) => setState("error", e.message)));
$("interrupt").addEventListener("click", interrupt);
$("stop").addEventListener("click", () => {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
  if (ctx) { ctx.close(); ctx = null; }
});

// ---- admin ------------------------------------------------------------------------------------------------------
async function loadDict() {
  try {
    const d = await api("GET", "/api/dictionary");
    $("dict").value = d.content;
    $("dict-status").textContent = `${d.entries} entries` + (d.errors.length ? `, ${d.errors.length} errors` : "");
  } catch (e) {
    $("dict-status").textContent = e.message;
  }
}
$("dict-load").addEventListener("click", loadDict);
$("dict-save").addEventListener("click", async () => {
  try {
    const d = await api("PUT", "/api/dictionary", { content: $("dict").value });
    $("dict-status").textContent = `applied: ${d.entries} entries`;
  } catch (e) {
    $("dict-status").textContent = e.message;
  }
});
$("free-cache").addEventListener("click", async () => {
  try {
    const r = await api("POST", "/api/cache/clear");
    $("cache-status").textContent = `freed ${(Number(r.freed_bytes) / 1048576).toFixed(1)} MiB, ` +
      `${r.freed_streams} streams on ${r.decoders} decoder(s)`;
  } catch (e) {
    $("cache-status").textContent = e.message;
  }
});
$("reload-voices").addEventListener("click", loadVoices);
$("voice").addEventListener("change", showLicense);
$("model").addEventListener("change", showLicense);

loadVoices();
loadDict();
render();
