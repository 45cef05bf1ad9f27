// Tasks: newest first, filtered by agent, type, status, time and command text, a page at a time.

import { api } from "./api.js";
import { STATUSES, duration, h, hashLink, hashQuery, mount, notice, pageHead, statusBadge, when } from "./dom.js";

const PAGE_SIZES = ["10", "20", "50", "100"];
const FILTERS = ["agent_id", "type", "status", "since", "until", "q"];

/** A datetime-local value ("2025-01-31T14:05") as ISO 8601 with the browser's offset, for since/until. */
function isoFromLocal(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

function select(name, value, options, anyLabel) {
  return h(
    "select",
    { name, id: `f-${name}` },
    h("option", { value: "" }, anyLabel),
    options.map((o) => h("option", { value: o, selected: o === value }, o)),
  );
}

export function tasksPage(main) {
  const state = hashQuery();
  const page = Math.max(1, Number.parseInt(state.page || "1", 10) || 1);
  const pageSize = PAGE_SIZES.includes(state.page_size) ? state.page_size : "20";
  const controller = new AbortController();
  document.title = "Tasks · Tiangong";

  const body = h("div", { id: "tasks-body" }, h("p", { class: "muted" }, "Loading…"));
  const filters = h("form", { class: "filters card", id: "task-filters" });
  mount(
    main,
    pageHead("Tasks", h("a", { class: "btn btn-primary", href: "#/run" }, "Run a task"),
      h("button", { type: "button", class: "btn", onclick: () => load() }, "Refresh")),
    filters,
    body,
  );

  function go(changes) {
    const next = { ...state, ...changes };
    location.hash = hashLink("/tasks", next);
  }

  function buildFilters(agents, types) {
    const text = (name, attrs) => h("input", { name, id: `f-${name}`, value: state[name] || "", ...attrs });
    mount(
      filters,
      h("label", {}, "Agent", select("agent_id", state.agent_id, agents, "Any agent")),
      h("label", {}, "Type", select("type", state.type, types, "Any type")),
      h("label", {}, "Status", select("status", state.status, STATUSES, "Any status")),
      h("label", {}, "Created after", text("since", { type: "datetime-local" })),
      h("label", {}, "Created before", text("until", { type: "datetime-local" })),
      h("label", { class: "grow" }, "Command contains", text("q", { type: "search", maxlength: 200, placeholder: "e.g. deploy" })),
      h("div", { class: "filter-buttons" },
        h("button", { type: "submit", class: "btn" }, "Apply"),
        h("a", { class: "btn btn-quiet", href: hashLink("/tasks", { page_size: state.page_size }) }, "Clear")),
    );
    for (const el of filters.querySelectorAll("select")) el.addEventListener("change", apply);
  }

  function apply(e) {
    e?.preventDefault();
    const form = new FormData(filters);
    const changes = { page: "" };
    for (const k of FILTERS) changes[k] = (form.get(k) || "").toString().trim();
    go(changes);
  }
  filters.addEventListener("submit", apply);

  async function load() {
    try {
      const query = { page, page_size: pageSize };
      for (const k of FILTERS) query[k] = state[k];
      query.since = isoFromLocal(state.since);
      query.until = isoFromLocal(state.until);
      const data = await api("/api/v1/tasks", { query, signal: controller.signal });
      mount(body, table(data), pager(data));
    } catch (err) {
      if (!controller.signal.aborted) mount(body, notice("error", `Cannot list tasks: ${err.message}`));
    }
  }

  function table(data) {
    if (!data.list.length) {
      return h("div", { class: "card empty" }, "No task matches these filters.");
    }
    return h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { class: "table", id: "tasks-table" },
        h("thead", {}, h("tr", {}, ["Task", "Status", "Agent", "Type", "Command", "Created", "Duration", "Exit"].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          data.list.map((t) =>
            h(
              "tr",
              { dataset: { task: t.id } },
              h("td", {}, h("a", { href: hashLink(`/tasks/${t.id}`), class: "mono" }, t.id)),
              h("td", {}, statusBadge(t.status)),
              h("td", {}, t.fleet ? `fleet · ${t.fleet.targets} agent${t.fleet.targets === 1 ? "" : "s"}` : t.agent_id),
              h("td", {}, h("span", { class: "tag" }, t.type)),
              h("td", { class: "command mono", title: t.command }, t.command || h("span", { class: "muted" }, "—")),
              h("td", { class: "nowrap" }, when(t.created_at)),
              h("td", { class: "nowrap" }, duration(t)),
              h("td", { class: "num" }, t.exit_code ?? "—"),
            ),
          ),
        ),
      ),
    );
  }

  function pager(data) {
    const pages = Math.max(1, Math.ceil(data.total / data.page_size));
    const sizes = h(
      "select",
      { id: "page-size", "aria-label": "Tasks per page", onchange: (e) => go({ page_size: e.target.value, page: "" }) },
      PAGE_SIZES.map((s) => h("option", { value: s, selected: s === pageSize }, `${s} per page`)),
    );
    return h(
      "div",
      { class: "pager" },
      h("span", { id: "page-info", class: "muted" }, `Page ${data.page} of ${pages} · ${data.total} task${data.total === 1 ? "" : "s"}`),
      h("div", { class: "actions" },
        sizes,
        h("button", { type: "button", class: "btn", id: "prev-page", disabled: page <= 1, onclick: () => go({ page: String(page - 1) }) }, "‹ Previous"),
        h("button", { type: "button", class: "btn", id: "next-page", disabled: page >= pages, onclick: () => go({ page: String(page + 1) }) }, "Next ›")),
    );
  }

  api("/api/v1/agents", { signal: controller.signal })
    .then((agents) => {
      const ids = agents.map((a) => a.id).sort();
      const types = [...new Set(agents.flatMap((a) => a.executors || []))].sort();
      if (state.agent_id && !ids.includes(state.agent_id)) ids.push(state.agent_id);
      if (state.type && !types.includes(state.type)) types.push(state.type);
      buildFilters(ids, types);
    })
    .catch(() => buildFilters(state.agent_id ? [state.agent_id] : [], state.type ? [state.type] : []));
  load();
  return () => controller.abort();
}
