// Run a task: pick an agent and a type, give the command (and optionally params, env, a file), submit.

import { api } from "./api.js";
import { h, mount, notice, pageHead } from "./dom.js";

/** "K=V" lines as an object; a line without "=" is an error naming it. */
function parseEnv(text) {
  const env = {};
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`env, line ${i + 1}: expected NAME=value`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return env;
}

export function runPage(main) {
  const controller = new AbortController();
  document.title = "Run a task · Tiangong";
  const message = h("div", { id: "run-message" });
  const form = h("form", { class: "card run-form", id: "run-form" }, h("p", { class: "muted" }, "Loading agents…"));
  mount(main, pageHead("Run a task"), form, message);

  function build(agents, files) {
    const agentSelect = h(
      "select",
      { name: "agent_id", id: "run-agent", required: true },
      agents.map((a) =>
        h("option", { value: a.id, disabled: a.status !== "online" || a.disabled },
          `${a.id}${a.status !== "online" ? " (offline)" : a.disabled ? " (disabled)" : ""}`),
      ),
    );
    const typeSelect = h("select", { name: "type", id: "run-type", required: true });
    const fillTypes = () => {
      const agent = agents.find((a) => a.id === agentSelect.value);
      const types = agent?.executors?.length ? agent.executors : ["shell"];
      const keep = typeSelect.value || "shell";
      mount(typeSelect, types.map((t) => h("option", { value: t, selected: t === keep }, t)));
    };
    agentSelect.addEventListener("change", fillTypes);
    const firstOnline = agents.find((a) => a.status === "online" && !a.disabled);
    if (firstOnline) agentSelect.value = firstOnline.id;
    fillTypes();

    const field = (label, control, hint) =>
      h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint ? h("p", { class: "hint" }, hint) : null);
    const command = h("textarea", { name: "command", id: "run-command", rows: 5, class: "mono", spellcheck: "false",
      placeholder: "echo hello from $(hostname)" });
    const params = h("textarea", { name: "params", id: "run-params", rows: 3, class: "mono", spellcheck: "false", placeholder: "{}" });
    const env = h("textarea", { name: "env", id: "run-env", rows: 3, class: "mono", spellcheck: "false", placeholder: "NAME=value" });
    const file = h("select", { name: "file_id", id: "run-file" }, h("option", { value: "" }, "No file"),
      files.map((f) => h("option", { value: f.id }, `${f.id} · ${f.name}`)));
    const execTimeout = h("input", { type: "number", name: "exec_timeout", id: "run-exec-timeout", min: 1, placeholder: "type default" });
    const retries = h("input", { type: "number", name: "max_retries", id: "run-retries", min: 0, max: 20, value: 0 });
    const submit = h("button", { type: "submit", class: "btn btn-primary", id: "run-submit" }, "Run task");

    mount(
      form,
      h("div", { class: "form-row" }, field("Agent", agentSelect), field("Type", typeSelect)),
      field("Command", command, "shell: a command line for /bin/sh -c; python: a script. The log follows live on the task's page."),
      h("div", { class: "form-row" },
        field("Params (JSON object)", params, "Type-specific, e.g. {\"cwd\": \"/srv/app\"}."),
        field("Environment", env, "One NAME=value per line.")),
      h("div", { class: "form-row" },
        field("File", file, "Its local path is in $TIANGONG_FILE."),
        field("Execution timeout (s)", execTimeout),
        field("Retries", retries)),
      h("div", { class: "form-actions" }, submit, agents.length ? null : h("span", { class: "muted" }, "No agent has registered yet.")),
    );

    form.onsubmit = async (e) => {
      e.preventDefault();
      mount(message);
      const body = { agent_id: agentSelect.value, type: typeSelect.value, command: command.value };
      try {
        if (params.value.trim()) {
          let parsed;
          try {
            parsed = JSON.parse(params.value);
          } catch (err) {
            throw new Error(`params: not valid JSON (${err.message})`);
          }
          if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("params: must be a JSON object");
          body.params = parsed;
        }
        const envs = parseEnv(env.value);
        if (Object.keys(envs).length) body.env = envs;
        if (file.value) body.file_id = file.value;
        if (execTimeout.value) body.exec_timeout = Number(execTimeout.value);
        if (retries.value && Number(retries.value) > 0) body.max_retries = Number(retries.value);
      } catch (err) {
        mount(message, notice("error", err.message));
        return;
      }
      submit.disabled = true;
      try {
        const task = await api("/api/v1/tasks", { method: "POST", body });
        location.hash = `#/tasks/${encodeURIComponent(task.id)}`;
      } catch (err) {
        mount(message, notice("error", `The task was not created: ${err.message}`));
      } finally {
        submit.disabled = false;
      }
    };
  }

  Promise.all([
    api("/api/v1/agents", { signal: controller.signal }),
    api("/api/v1/files", { query: { page_size: 100 }, signal: controller.signal }).then((p) => p.list).catch(() => []),
  ])
    .then(([agents, files]) => build(agents, files))
    .catch((err) => {
      if (!controller.signal.aborted) mount(form, notice("error", `Cannot load agents: ${err.message}`));
    });
  return () => controller.abort();
}
