// Shared by the pages: the bearer token (kept in localStorage) and fetch() with JSON errors.
"use strict";

const $ = (id) => document.getElementById(id);

function token() {
  const el = $("token");
  return el ? el.value.trim() : "";
}

(function keepToken() {
  const el = $("token");
  if (!el) return;
  el.value = localStorage.getItem("tts-token") || "";
  el.addEventListener("change", () => localStorage.setItem("tts-token", el.value.trim()));
})();

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

// fetch → parsed JSON; throws Error(message) with .status for non-2xx answers ({"error": {"message"}} bodies)
async function api(method, url, body, headers) {
  const opts = { method, headers: authHeaders(headers) };
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === "string") {
      opts.body = body;
    } else {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
  }
  const resp = await fetch(url, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = data && data.error ? data.error.message : resp.statusText;
    const err = new Error(`${resp.status}: ${msg}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
