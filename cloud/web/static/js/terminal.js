// The web shell (docs/web-shell.md): "Open shell" on the Agents page starts a web_shell task on the agent
// and attaches this browser terminal (xterm.js, vendored under /ui/vendor/xterm/) to it over a WebSocket.

import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";
import { api, session } from "./api.js";
import { h, mount, notice, pageHead } from "./dom.js";

// A browser cannot set an Authorization header on a WebSocket, and a token in the URL would land in
// access logs: the token travels as a subprotocol next to the one the cloud selects.
const SUBPROTOCOL = "tiangong.v1";

let stylesAdopted = false;

/** xterm.js writes its theme and cell sizes into <style> elements, which this page's CSP (no inline
 *  styles) refuses. It gets an inert <template> in their place (xterm only sets its text and removes it),
 *  and the text goes into a constructed stylesheet, which the CSP does not govern. No other part of the UI
 *  makes <style> elements. */
function adoptStyleElements() {
  if (stylesAdopted) return;
  stylesAdopted = true;
  const create = document.createElement.bind(document);
  document.createElement = (tag, options) => {
    if (String(tag).toLowerCase() !== "style") return create(tag, options);
    const el = create("template");
    const sheet = new CSSStyleSheet();
    let text = "";
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    Object.defineProperty(el, "textContent", {
      get: () => text,
      set: (value) => {
        text = String(value ?? "");
        sheet.replaceSync(text);
      },
    });
    const remove = el.remove.bind(el);
    el.remove = () => {
      document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
      remove();
    };
    return el;
  };
}

export function shellPage(main, agentId) {
  document.title = `Shell on ${agentId} · Tiangong`;
  const status = h("p", { class: "muted", id: "shell-status" }, "Starting a web_shell task…");
  const screen = h("div", { class: "terminal", id: "terminal" });
  const taskLink = h("span", { id: "shell-task" });
  mount(main, pageHead(`Shell on ${agentId}`, taskLink), status, h("div", { class: "card terminal-card" }, screen));

  adoptStyleElements();
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, convertEol: false });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(screen);
  fit.fit();
  let ws = null;
  let left = false;
  const encoder = new TextEncoder();

  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(data);
  }

  function sendSize() {
    send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
  }

  term.onData((text) => send(encoder.encode(text))); // binary: typed text is never taken for a control
  term.onBinary((text) => send(Uint8Array.from(text, (c) => c.charCodeAt(0))));
  term.onResize(sendSize);
  const onWindowResize = () => fit.fit();
  window.addEventListener("resize", onWindowResize);

  async function start() {
    let task;
    try {
      task = await api("/api/v1/tasks", {
        method: "POST",
        body: { agent_id: agentId, type: "web_shell", params: { cols: term.cols, rows: term.rows } },
      });
    } catch (err) {
      mount(status, notice("error", `Cannot open a shell on ${agentId}: ${err.message}`));
      return;
    }
    if (left) return;
    mount(taskLink, h("a", { href: `#/tasks/${encodeURIComponent(task.id)}`, class: "btn" }, `Task ${task.id} (transcript)`));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/v1/tasks/${encodeURIComponent(task.id)}/shell`;
    ws = new WebSocket(url, [SUBPROTOCOL, `bearer.${session.token()}`]);
    ws.binaryType = "arraybuffer";
    mount(status, `Connecting to ${agentId}… (${task.id})`);
    ws.onopen = () => {
      mount(status, `Connected to ${agentId} (${task.id}). Closing this page ends the shell.`);
      sendSize();
      term.focus();
    };
    ws.onmessage = (event) => {
      term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
    };
    ws.onclose = (event) => {
      if (left) return;
      const why = event.reason || (event.code === 1006 ? "the connection was refused or lost" : `close code ${event.code}`);
      const kind = event.code === 1000 || event.code === 4000 ? "info" : "error";
      mount(status, notice(kind, `The shell session ended: ${why}.`));
    };
  }

  start();
  return () => {
    left = true;
    window.removeEventListener("resize", onWindowResize);
    if (ws) ws.close(1000, "the browser left");
    term.dispose();
  };
}
