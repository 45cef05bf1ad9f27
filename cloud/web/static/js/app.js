// The UI's router: one page per location hash (#/tasks, #/tasks/task-7, #/agents, #/agents/web-1/shell,
// #/files, #/run, #/login).

import { session, setUnauthorizedHandler } from "./api.js";
import { loginPage } from "./login.js";
import { tasksPage } from "./tasks.js";
import { taskPage } from "./task.js";
import { agentsPage } from "./agents.js";
import { filesPage } from "./files.js";
import { runPage } from "./run.js";
import { shellPage } from "./terminal.js";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let leave = null; // the current page's cleanup (stops a log follow, timers)
let loginReason = "";

const routes = [
  [/^\/tasks\/([^/?]+)$/, (m) => taskPage(main, decodeURIComponent(m[1]))],
  [/^\/tasks$/, () => tasksPage(main)],
  [/^\/agents$/, () => agentsPage(main)],
  [/^\/agents\/([^/?]+)\/shell$/, (m) => shellPage(main, decodeURIComponent(m[1]))],
  [/^\/files$/, () => filesPage(main)],
  [/^\/run$/, () => runPage(main)],
];

function path() {
  const raw = location.hash.replace(/^#/, "") || "/tasks";
  const q = raw.indexOf("?");
  return q < 0 ? raw : raw.slice(0, q);
}

function render() {
  if (leave) leave();
  leave = null;
  const where = path();
  if (!session.token()) {
    topbar.hidden = true;
    document.title = "Sign in · Tiangong";
    leave = loginPage(main, loginReason, () => {
      loginReason = "";
      if (where === "/login") location.hash = "#/tasks";
      else render();
    });
    return;
  }
  topbar.hidden = false;
  for (const a of topbar.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", where.startsWith(`/${a.dataset.nav}`));
  }
  for (const [re, page] of routes) {
    const m = where.match(re);
    if (m) {
      leave = page(m) || null;
      return;
    }
  }
  location.replace("#/tasks");
}

setUnauthorizedHandler((err) => {
  session.clear();
  loginReason = `Your session ended: ${err?.message || "the token is no longer accepted"}. Sign in again.`;
  render();
});

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  loginReason = "";
  location.hash = "#/login";
  render();
});

window.addEventListener("hashchange", render);
render();
