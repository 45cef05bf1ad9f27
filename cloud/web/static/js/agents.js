// Agents: online state, labels, running tasks against capacity, last heartbeat.

import { api } from "./api.js";
import { ago, h, hashLink, mount, notice, pageHead, when } from "./dom.js";

export function agentsPage(main) {
  const controller = new AbortController();
  const body = h("div", { id: "agents-body" }, h("p", { class: "muted" }, "Loading…"));
  document.title = "Agents · Tiangong";
  mount(main, pageHead("Agents", h("button", { type: "button", class: "btn", onclick: () => load() }, "Refresh")), body);

  async function running(agentId) {
    const page = await api("/api/v1/tasks", {
      query: { agent_id: agentId, status: "running", page_size: 1 },
      signal: controller.signal,
    });
    return page.total;
  }

  async function load() {
    try {
      const agents = await api("/api/v1/agents", { signal: controller.signal });
      agents.sort((a, b) => (a.status === b.status ? a.id.localeCompare(b.id) : a.status === "online" ? -1 : 1));
      const busy = await Promise.all(agents.map((a) => running(a.id).catch(() => null)));
      const online = agents.filter((a) => a.status === "online").length;
      mount(
        body,
        h("p", { class: "muted summary" }, `${online} of ${agents.length} agent${agents.length === 1 ? "" : "s"} online`),
        agents.length ? table(agents, busy) : h("div", { class: "card empty" }, "No agent has registered yet."),
      );
    } catch (err) {
      if (!controller.signal.aborted) mount(body, notice("error", `Cannot list agents: ${err.message}`));
    }
  }

  function table(agents, busy) {
    const now = Date.now();
    return h(
      "div",
      { class: "card table-wrap" },
      h(
        "table",
        { class: "table", id: "agents-table" },
        h("thead", {}, h("tr", {}, ["Agent", "State", "Labels", "Running", "Last heartbeat", "Host", "Version", "Task types", ""].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          agents.map((a, i) =>
            h(
              "tr",
              { dataset: { agent: a.id } },
              h("td", {}, h("strong", { class: "mono" }, a.id)),
              h("td", {},
                h("span", { class: `state state-${a.status}` }, a.status),
                a.disabled ? h("span", { class: "badge badge-canceled" }, "disabled") : null),
              h("td", { class: "labels" },
                Object.entries(a.labels || {}).map(([k, v]) => h("span", { class: "label-chip" }, `${k}=${v}`)),
                Object.keys(a.labels || {}).length ? null : h("span", { class: "muted" }, "—")),
              h("td", { class: "nowrap" },
                h("a", { href: hashLink("/tasks", { agent_id: a.id, status: "running" }), class: "running" },
                  `${busy[i] ?? "?"} / ${a.max_concurrency}`)),
              h("td", { class: "nowrap", title: a.last_seen_at || "" }, ago(a.last_seen_at, now), " ", h("span", { class: "muted small" }, when(a.last_seen_at))),
              h("td", {}, a.hostname || h("span", { class: "muted" }, "—")),
              h("td", { class: "mono" }, a.version || "—"),
              h("td", { class: "types" }, (a.executors || []).join(", ")),
              h("td", { class: "nowrap" }, canShell(a)
                ? h("a", { href: `#/agents/${encodeURIComponent(a.id)}/shell`, class: "btn btn-small open-shell" }, "Open shell")
                : null),
            ),
          ),
        ),
      ),
    );
  }

  // An agent that lists its types must list web_shell (an older agent does not have it).
  function canShell(a) {
    return a.status === "online" && !a.disabled && (!(a.executors || []).length || a.executors.includes("web_shell"));
  }

  load();
  const timer = setInterval(load, 10_000);
  return () => {
    controller.abort();
    clearInterval(timer);
  };
}
