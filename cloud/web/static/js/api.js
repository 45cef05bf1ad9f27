// The REST API as the UI uses it: the token from sessionStorage as a bearer header, errors as ApiError.
// The token never goes into a URL (URLs end up in access logs and the browser history).

const TOKEN_KEY = "tiangong.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  save: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

let onUnauthorized = () => {};
/** Called when a request is answered 401 (token revoked or expired): the app sends the user to sign in. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function authHeaders(token = session.token()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function errorFrom(res) {
  let body = null;
  let message = `${res.status} ${res.statusText}`;
  try {
    body = await res.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, message, body);
}

/** A JSON call; `query` is an object of parameters (empty values left out). */
export async function api(path, { method = "GET", query, body, token, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json", ...authHeaders(token) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    credentials: "omit",
  });
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && token === undefined) onUnauthorized(err);
    throw err;
  }
  if (res.status === 204) return null;
  return res.json();
}

/** Upload one file as multipart with progress events (fetch cannot report upload progress; XHR can).
 *  Resolves to {file, created}: created is false when the same content was stored before (HTTP 200). */
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/files");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    });
    xhr.addEventListener("load", () => {
      const body = xhr.response;
      if (xhr.status === 200 || xhr.status === 201) {
        resolve({ file: body, created: xhr.status === 201 });
        return;
      }
      const message = body && typeof body.error === "string" ? body.error : `${xhr.status} ${xhr.statusText}`;
      if (xhr.status === 401) onUnauthorized();
      reject(new ApiError(xhr.status, message, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload failed: the cloud cannot be reached")));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** Download a file with the bearer header, then hand it to the browser as a save. */
export async function download(fileId, name) {
  const res = await fetch(`/api/v1/files/${encodeURIComponent(fileId)}/content`, {
    headers: authHeaders(),
    credentials: "omit",
  });
  if (!res.ok) throw await errorFrom(res);
  const blob = await res.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });

/** Parse one Server-Sent Events block into {event, id, data}; comments (": keepalive") give null. */
function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, id, data: data.join("\n") } : null;
}

/** Follow a task's log live: `GET .../logs?follow=true` as text/event-stream, read with fetch (EventSource
 *  cannot send the Authorization header). Calls onLine(line) for each line and onEnd({status, exit_code,
 *  error}) once. A dropped connection is resumed after the last line seen (Last-Event-ID). */
export async function followLog(taskId, { after = 0, onLine, onEnd, onState = () => {}, signal }) {
  let last = after;
  let delay = 500;
  while (!signal.aborted) {
    let res;
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (last) headers["Last-Event-ID"] = String(last);
      res = await fetch(`/api/v1/tasks/${encodeURIComponent(taskId)}/logs?follow=true&after=${last}`, {
        headers,
        signal,
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      if (signal.aborted) return;
      onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10_000);
      continue;
    }
    if (!res.ok) {
      const err = await errorFrom(res);
      if (res.status === 401) onUnauthorized(err);
      throw err;
    }
    onState("live");
    delay = 500;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replaceAll("\r\n", "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!ev) continue;
          if (ev.event === "log") {
            const line = JSON.parse(ev.data);
            last = line.id;
            onLine(line);
          } else if (ev.event === "end") {
            onEnd(JSON.parse(ev.data));
            return;
          }
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    // The stream closed without its end event (the cloud restarting, a proxy): resume after the last line.
    onState("reconnecting");
    await sleep(delay, signal);
  }
}
