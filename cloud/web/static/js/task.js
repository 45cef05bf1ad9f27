// One task: its fields, cancel/retry, and its log followed live with stdout, stderr and system lines apart.

import { api, followLog } from "./api.js";
import { FINAL, clock, duration, h, hashLink, mount, notice, pageHead, statusBadge, when } from "./dom.js";

const STREAMS = ["stdout", "stderr", "system"];
const STREAM_LABEL = { stdout: "out", stderr: "err", system: "sys" };

export function taskPage(main, id) {
  const controller = new AbortController();
  let task = null;
  let lastLogId = 0;
  let lastAttempt = null;
  let following = false;
  let followAgain = false; // a retry while a follow was ending: follow once more for the new attempt
  let poll = null;
  let refreshes = 0;
  document.title = `${id} · Tiangong`;

  const head = h("div");
  const message = h("div", { id: "task-message" });
  const fields = h("div", { class: "card fields", id: "task-fields" });
  const fleet = h("div", { id: "fleet" }); // a fleet run's targets (docs/fleet.md); empty for other tasks
  const liveState = h("span", { class: "live", id: "log-state" });
  const counts = h("span", { class: "muted", id: "log-counts" });
  const log = h("div", { class: "log", id: "log", role: "log", "aria-live": "off", tabindex: 0 });
  const shown = Object.fromEntries(STREAMS.map((s) => [s, true]));
  const tally = { stdout: 0, stderr: 0, system: 0 };

  const toggles = STREAMS.map((s) =>
    h("label", { class: `toggle toggle-${s}` },
      h("input", { type: "checkbox", checked: true, "data-stream": s, onchange: (e) => {
        shown[s] = e.target.checked;
        log.classList.toggle(`hide-${s}`, !shown[s]);
      } }),
      s),
  );

  mount(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", h("span", { class: "mono" }, id)),
    head,
    message,
    fields,
    fleet,
    h("section", { class: "card log-card" },
      h("div", { class: "log-head" }, h("h2", {}, "Log"), liveState, counts, h("div", { class: "toggles" }, toggles)),
      log),
  );

  function setState(text, kind) {
    liveState.className = `live live-${kind}`;
    liveState.textContent = text;
  }

  function renderHead() {
    const active = !FINAL.has(task.status);
    mount(
      head,
      pageHead(
        h("span", { class: "title-with-badge" }, h("span", { class: "mono" }, task.id), statusBadge(task.status)),
        h("button", { type: "button", class: "btn btn-danger", id: "cancel", disabled: !active, onclick: cancel }, "Cancel"),
        // A fleet run is not retried as a whole (its children are).
        h("button", { type: "button", class: "btn", id: "retry", disabled: active || !!task.fleet, onclick: retry }, "Retry"),
      ),
    );
  }

  function renderFields() {
    const row = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
    const exit = task.exit_code ?? "—";
    mount(
      fields,
      h(
        "dl",
        { class: "grid" },
        task.fleet
          ? row("Agents", `fleet run on ${task.fleet.targets} agent${task.fleet.targets === 1 ? "" : "s"}`)
          : row("Agent", h("a", { href: hashLink("/tasks", { agent_id: task.agent_id }) }, task.agent_id)),
        task.parent_id ? row("Fleet run", h("a", { href: hashLink(`/tasks/${task.parent_id}`), class: "mono", id: "parent-link" }, task.parent_id)) : null,
        row("Type", h("span", { class: "tag" }, task.type)),
        row("Exit code", h("span", { id: "exit-code", class: "mono" }, String(exit))),
        row("Attempts", `${task.attempts}${task.max_retries ? ` (retries ${task.retries} of ${task.max_retries})` : ""}`),
        row("Created", when(task.created_at)),
        row("Started", when(task.started_at)),
        row("Finished", when(task.finished_at)),
        row("Duration", duration(task)),
        task.file_id ? row("File", h("span", { class: "mono" }, task.file_id)) : null,
        task.request_id ? row("Request id", h("span", { class: "mono" }, task.request_id)) : null,
      ),
      h("div", { class: "field-block" }, h("div", { class: "label" }, "Command"),
        h("pre", { class: "code", id: "task-command" }, task.command || "—")),
      Object.keys(task.params || {}).length
        ? h("div", { class: "field-block" }, h("div", { class: "label" }, "Params"),
            h("pre", { class: "code" }, JSON.stringify(task.params, null, 2)))
        : null,
      Object.keys(task.env || {}).length
        ? h("div", { class: "field-block" }, h("div", { class: "label" }, "Environment"),
            h("pre", { class: "code" }, Object.entries(task.env).map(([k, v]) => `${k}=${v}`).join("\n")))
        : null,
      task.error
        ? h("div", { class: "field-block" }, h("div", { class: "label" }, "Error"),
            h("pre", { class: "code code-error", id: "task-error" }, task.error))
        : null,
    );
  }

  function renderFleet() {
    const run = task.fleet;
    if (!run || !run.results) return mount(fleet);
    const c = run.counts || {};
    const summary = ["success", "failed", "timeout", "canceled", "running", "pending", "not_run"]
      .filter((s) => c[s])
      .map((s) => `${c[s]} ${s.replace("_", " ")}`)
      .join(" · ");
    mount(
      fleet,
      h("section", { class: "card table-wrap" },
        h("div", { class: "log-head" },
          h("h2", {}, "Agents"),
          h("span", { class: "muted", id: "fleet-summary" },
            `${summary || "nothing started yet"} · up to ${run.concurrency} at once · stops after ${run.error_limit + 1} error${run.error_limit ? "s" : ""}`
              + (run.outcome ? ` · outcome: ${run.outcome}` : ""))),
        h("table", { class: "table", id: "children-table" },
          h("thead", {}, h("tr", {}, ["Agent", "Status", "Exit", "Task", "Error"].map((t) => h("th", {}, t)))),
          h("tbody", {},
            run.results.map((r) =>
              h("tr", { dataset: { agent: r.agent_id } },
                h("td", { class: "mono" }, r.agent_id),
                h("td", {}, statusBadge(r.status)),
                h("td", { class: "num" }, r.exit_code ?? "—"),
                h("td", {}, r.task_id ? h("a", { href: hashLink(`/tasks/${r.task_id}`), class: "mono" }, r.task_id) : h("span", { class: "muted" }, "—")),
                h("td", { class: "command", title: r.error }, r.error || h("span", { class: "muted" }, "—")),
              ))))),
    );
  }

  async function refresh() {
    const mine = ++refreshes;
    let fresh;
    try {
      fresh = await api(`/api/v1/tasks/${encodeURIComponent(id)}`, { signal: controller.signal });
    } catch (err) {
      if (!controller.signal.aborted) mount(message, notice("error", `Cannot load ${id}: ${err.message}`));
      return;
    }
    if (mine !== refreshes) return; // a later refresh was started: its answer is the newer one
    task = fresh;
    renderHead();
    renderFields();
    renderFleet();
    if (!FINAL.has(task.status) && !following) follow();
    clearTimeout(poll);
    // The log's end event says when the task ends; this catches pending -> running and retries waiting.
    if (!FINAL.has(task.status)) poll = setTimeout(refresh, 2000);
  }

  // Lines are put on the page in batches: one layout per batch, not one per line of a long log.
  let batch = [];
  let flushTimer = null;

  function addLine(line) {
    if (line.attempt !== lastAttempt && lastAttempt !== null) {
      batch.push(h("div", { class: "log-attempt" }, `attempt ${line.attempt}`));
    }
    lastAttempt = line.attempt;
    const stream = STREAMS.includes(line.stream) ? line.stream : "system";
    tally[stream] += 1;
    batch.push(
      h("div", { class: `log-line log-${stream}`, dataset: { stream, seq: line.seq } },
        h("span", { class: "log-time" }, clock(line.timestamp)),
        h("span", { class: "log-stream" }, STREAM_LABEL[stream]),
        h("span", { class: "log-msg" }, line.message)),
    );
    flushTimer ??= setTimeout(flush, 30);
  }

  function flush() {
    flushTimer = null;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
    log.querySelector(".log-empty")?.remove();
    log.append(...batch);
    batch = [];
    if (atBottom) log.scrollTop = log.scrollHeight;
    counts.textContent = `${tally.stdout} stdout · ${tally.stderr} stderr · ${tally.system} system`;
  }

  async function follow() {
    following = true;
    setState("connecting…", "wait");
    try {
      await followLog(id, {
        after: lastLogId,
        signal: controller.signal,
        onLine: (line) => {
          lastLogId = line.id;
          addLine(line);
        },
        onEnd: (end) => {
          flush();
          setState(`ended: ${end.status}`, "done");
          refresh();
        },
        onState: (s) => setState(s === "live" ? "● live" : "reconnecting…", s === "live" ? "on" : "wait"),
      });
    } catch (err) {
      if (!controller.signal.aborted) setState(`log unavailable: ${err.message}`, "error");
    } finally {
      following = false;
    }
    if (followAgain && !controller.signal.aborted) {
      followAgain = false;
      follow();
      return;
    }
    if (!log.childElementCount && !batch.length && !controller.signal.aborted) {
      log.append(h("div", { class: "log-empty muted" }, "No output."));
    }
  }

  async function act(verb) {
    mount(message);
    try {
      task = await api(`/api/v1/tasks/${encodeURIComponent(id)}/${verb}`, { method: "POST" });
      mount(message, notice("ok", verb === "cancel" ? `Cancel requested for ${id}.` : `${id} queued again (attempt ${task.attempts + 1}).`));
      log.querySelector(".log-empty")?.remove();
      if (verb === "retry") {
        // The follow under way may already have its end (of the attempt before): follow the new one after it.
        if (following) followAgain = true;
        else follow();
      }
      refresh();
    } catch (err) {
      mount(message, notice("error", `Cannot ${verb} ${id}: ${err.message}`));
    }
  }
  const cancel = () => act("cancel");
  const retry = () => act("retry");

  refresh().then(() => {
    if (task && FINAL.has(task.status) && !following) follow();
  });
  return () => {
    controller.abort();
    clearTimeout(poll);
    clearTimeout(flushTimer);
  };
}
