// Files: upload with progress (the same content twice is stored once, and the page says so), list, download.

import { api, download, upload } from "./api.js";
import { bytes, h, hashLink, hashQuery, mount, notice, pageHead, when } from "./dom.js";

export function filesPage(main) {
  const state = hashQuery();
  const page = Math.max(1, Number.parseInt(state.page || "1", 10) || 1);
  const controller = new AbortController();
  document.title = "Files · Tiangong";

  const input = h("input", { type: "file", id: "upload-input", name: "file" });
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const percent = h("span", { id: "upload-percent", class: "muted" });
  const result = h("div", { id: "upload-result" });
  const button = h("button", { type: "submit", class: "btn btn-primary", id: "upload-button" }, "Upload");
  const search = h("input", { type: "search", name: "q", id: "files-q", value: state.q || "", placeholder: "Name contains", maxlength: 200 });
  const body = h("div", { id: "files-body" }, h("p", { class: "muted" }, "Loading…"));

  async function send(e) {
    e.preventDefault();
    const file = input.files[0];
    if (!file) {
      mount(result, notice("error", "Choose a file first."));
      return;
    }
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    mount(result);
    try {
      const { file: rec, created } = await upload(file, (sent, total) => {
        const pct = Math.round((sent / total) * 100);
        progress.value = pct;
        percent.textContent = `${pct}% · ${bytes(sent)} of ${bytes(total)}`;
      });
      progress.value = 100;
      mount(
        result,
        created
          ? notice("ok", "Stored ", h("strong", { class: "mono" }, rec.id), ": ", rec.name, ` (${bytes(rec.size)}).`)
          : notice(
              "info",
              h("strong", {}, "Already stored"),
              " as ",
              h("strong", { class: "mono" }, rec.id),
              ` (${rec.name}): the same content (MD5 ${rec.md5}) was uploaded before, so nothing new was saved.`,
            ),
      );
      load();
    } catch (err) {
      mount(result, notice("error", `Upload failed: ${err.message}`));
    } finally {
      button.disabled = false;
    }
  }

  mount(
    main,
    pageHead("Files"),
    h("form", { class: "card upload", id: "upload-form", onsubmit: send },
      h("div", { class: "upload-row" }, h("label", { for: "upload-input" }, "Upload a file"), input, button),
      h("div", { class: "upload-row" }, progress, percent),
      h("p", { class: "hint" }, "Identical content is stored once: uploading it again returns the existing record."),
      result),
    h("form", { class: "filters card", onsubmit: (e) => {
      e.preventDefault();
      location.hash = hashLink("/files", { q: search.value.trim() });
    } }, h("label", { class: "grow" }, "Search", search), h("div", { class: "filter-buttons" }, h("button", { type: "submit", class: "btn" }, "Search"))),
    body,
  );

  async function save(f, btn) {
    btn.disabled = true;
    try {
      await download(f.id, f.name);
    } catch (err) {
      mount(result, notice("error", `Download of ${f.id} failed: ${err.message}`));
    } finally {
      btn.disabled = false;
    }
  }

  async function load() {
    try {
      const data = await api("/api/v1/files", { query: { page, page_size: 20, q: state.q }, signal: controller.signal });
      const pages = Math.max(1, Math.ceil(data.total / data.page_size));
      mount(
        body,
        data.list.length
          ? h("div", { class: "card table-wrap" },
              h("table", { class: "table", id: "files-table" },
                h("thead", {}, h("tr", {}, ["File", "Name", "Size", "MD5", "Type", "Uploaded", ""].map((t) => h("th", {}, t)))),
                h("tbody", {}, data.list.map((f) => {
                  const btn = h("button", { type: "button", class: "btn btn-small", dataset: { download: f.id } }, "Download");
                  btn.addEventListener("click", () => save(f, btn));
                  return h("tr", { dataset: { file: f.id } },
                    h("td", { class: "mono" }, f.id),
                    h("td", { class: "name" }, f.name),
                    h("td", { class: "num nowrap" }, bytes(f.size)),
                    h("td", { class: "mono small", title: `SHA-256 ${f.sha256}` }, f.md5),
                    h("td", { class: "small" }, f.content_type),
                    h("td", { class: "nowrap" }, when(f.created_at)),
                    h("td", {}, btn));
                }))))
          : h("div", { class: "card empty" }, state.q ? "No file name matches." : "No file uploaded yet."),
        h("div", { class: "pager" },
          h("span", { class: "muted" }, `Page ${data.page} of ${pages} · ${data.total} file${data.total === 1 ? "" : "s"}`),
          h("div", { class: "actions" },
            h("a", { class: "btn", href: hashLink("/files", { ...state, page: page - 1 }), hidden: page <= 1 }, "‹ Previous"),
            h("a", { class: "btn", href: hashLink("/files", { ...state, page: page + 1 }), hidden: page >= pages }, "Next ›"))),
      );
    } catch (err) {
      if (!controller.signal.aborted) mount(body, notice("error", `Cannot list files: ${err.message}`));
    }
  }

  load();
  return () => controller.abort();
}
