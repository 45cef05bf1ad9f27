// Sign in with a token: checked against the API, then kept in this tab's sessionStorage only.

import { api, ApiError, session } from "./api.js";
import { h, mount, notice } from "./dom.js";

export function loginPage(main, reason, done) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "tgp_… or the admin token",
    required: true,
  });
  const message = h("div", { id: "login-message" }, reason ? notice("info", reason) : null);
  const button = h("button", { type: "submit", class: "btn btn-primary" }, "Sign in");

  async function submit(e) {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    mount(message);
    try {
      // Any read a caller token may do: the list of agents it reaches.
      await api("/api/v1/agents", { token });
      session.save(token);
      done();
    } catch (err) {
      const why =
        err instanceof ApiError && err.status === 401
          ? `This token was not accepted: ${err.message}.`
          : err instanceof ApiError && err.status === 403
            ? `This token cannot use the UI: ${err.message}.`
            : `Cannot sign in: ${err.message}`;
      mount(message, notice("error", why));
      input.select();
    } finally {
      button.disabled = false;
    }
  }

  mount(
    main,
    h(
      "div",
      { class: "login" },
      h(
        "form",
        { class: "card login-card", onsubmit: submit },
        h("div", { class: "login-brand" }, h("img", { src: "/ui/favicon.svg", alt: "", width: 36, height: 36 }), "Tiangong"),
        h("p", { class: "muted" }, "Sign in with an API token or the admin token."),
        h("label", { for: "token" }, "Token"),
        input,
        message,
        button,
        h(
          "p",
          { class: "hint" },
          "The token stays in this browser tab only (session storage): closing the tab signs you out.",
        ),
      ),
    ),
  );
  input.focus();
  return null;
}
