"""The page's style sheet, its script and the navigation icon (served by ``ui.app``, no build step).

The script does two things, both optional (every page works without it):

- **Refresh**: an element with ``data-poll-url`` and ``data-poll-ms`` > 0 is replaced every so
  often by a fresh copy of itself from that URL (server-rendered and escaped there); the copy says
  whether to go on (a finished bulk change answers ``data-poll-ms="0"``). Paused while the tab is
  hidden; a signed-out answer stops it with a note.
- **Links into the Airflow UI** (``a[data-airflow-route]``): inside the UI's frame they move the UI
  itself (its router follows ``history`` changes of the same origin) instead of opening Airflow
  inside the frame; outside a frame they are plain links.
"""

from __future__ import annotations

CSS = """
:root { --fg: #1f2328; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; --card: #fff;
        --ok: #1a7f37; --bad: #cf222e; --off: #8c959f; --warn: #bf8700; --run: #0969da; --new: #d8dee4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header.top { display: flex; gap: 16px; align-items: center; padding: 10px 20px; background: var(--card);
             border-bottom: 1px solid var(--line); }
header.top .who { margin-left: auto; color: var(--muted); }
main { max-width: 1280px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 22px; margin: 4px 0 12px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 24px 0 8px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
table { border-collapse: collapse; background: var(--card); width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #eaeef2; font-weight: 600; white-space: nowrap; }
tbody tr:hover { background: #f3f6f9; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mono, .mono { font: 12.5px ui-monospace, SFMono-Regular, Menlo, monospace; }
td.reason { word-break: break-word; max-width: 520px; }
td.when { white-space: nowrap; color: var(--muted); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); white-space: nowrap; }
.badge.PROCESSED { background: var(--ok); } .badge.ERROR, .badge.API_FAILED { background: var(--bad); }
.badge.PROCESSING, .badge.PENDING { background: var(--run); } .badge.UNKNOWN { background: var(--warn); }
.badge.NEW { background: #6e7781; } .badge.CANCELLED { background: var(--off); }
.progress { display: flex; height: 12px; min-width: 180px; border-radius: 6px; overflow: hidden;
            background: var(--new); }
.progress span { display: block; height: 100%; }
.progress .ok { background: var(--ok); } .progress .bad { background: var(--bad); }
.progress .off { background: var(--off); } .progress .warn { background: var(--warn); }
.progress .run { background: var(--run); } .progress .new { background: var(--new); }
.progress-label { color: var(--muted); font-size: 12px; margin-top: 2px; white-space: nowrap; }
.big .progress { height: 18px; }
.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 4px 16px;
         background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.facts dt { color: var(--muted); } .facts dd { margin: 0; word-break: break-word; }
.row { display: flex; gap: 8px 24px; flex-wrap: wrap; align-items: flex-start; }
.row > section { flex: 1 1 280px; max-width: 100%; overflow-x: auto; }
.row > section.wide { flex: 3 1 640px; }
.cards { display: flex; gap: 10px; flex-wrap: wrap; margin: 8px 0; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 6px 14px; }
.card .n { font-size: 20px; font-weight: 700; font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; }
.toolbar { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
.button, button { display: inline-block; padding: 5px 12px; border-radius: 6px; border: 1px solid var(--line);
                  background: var(--card); color: var(--fg); font: inherit; cursor: pointer; }
.button:hover, button:hover { background: #f3f4f6; text-decoration: none; }
.button.primary, button.primary { background: var(--ok); border-color: var(--ok); color: #fff; }
.button.danger, button.danger { background: var(--bad); border-color: var(--bad); color: #fff; }
input[type=text], input[type=search], select { padding: 5px 8px; border: 1px solid var(--line);
                  border-radius: 6px; font: inherit; background: var(--card); }
.notice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 8px; padding: 8px 14px; margin: 8px 0; }
.notice.error { background: #ffebe9; border-color: #ff8182; }
.notice.done { background: #dafbe1; border-color: #4ac26b; }
.none { color: var(--muted); font-style: italic; }
.pager { display: flex; gap: 12px; margin: 10px 0; }
details pre { white-space: pre-wrap; word-break: break-all; max-height: 300px; overflow: auto;
              background: var(--bg); padding: 6px; margin: 4px 0; }
form.confirm { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px;
               max-width: 720px; }
form.confirm label { display: block; margin: 10px 0; }
form.confirm input[type=text] { width: 100%; }
.stale { color: var(--bad); font-size: 12px; }
"""

JS = r"""
"use strict";
(function () {
  function later(fn, ms) { window.setTimeout(fn, ms); }
  function schedule(el) {
    var url = el.getAttribute("data-poll-url");
    var ms = parseInt(el.getAttribute("data-poll-ms") || "0", 10);
    if (url && ms > 0) { later(function () { refresh(el, url, ms); }, ms); }
  }
  function stale(el, text) {
    var note = document.createElement("p");
    note.className = "stale";
    note.textContent = text;
    el.insertBefore(note, el.firstChild);
  }
  function refresh(el, url, ms) {
    if (document.hidden) { later(function () { refresh(el, url, ms); }, ms); return; }
    fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html", "X-Requested-With": "fetch"}})
      .then(function (reply) {
        if (reply.status === 401 || reply.status === 403) {
          stale(el, "Not refreshed: signed out. Reload the page to sign in again.");
          return null;
        }
        if (!reply.ok) { throw new Error("HTTP " + reply.status); }
        return reply.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var holder = document.createElement("template");
        holder.innerHTML = html.trim();
        var fresh = holder.content.firstElementChild;
        if (!fresh) { return; }
        el.replaceWith(fresh);
        schedule(fresh);
      })
      .catch(function () { later(function () { refresh(el, url, ms); }, Math.min(ms * 2, 30000)); });
  }
  document.querySelectorAll("[data-poll-url]").forEach(schedule);

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-airflow-route]") : null;
    if (!link || window.parent === window || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    try {
      var ui = window.parent;
      ui.history.pushState(null, "", link.getAttribute("href"));
      ui.dispatchEvent(new PopStateEvent("popstate", {state: null}));
      event.preventDefault();
    } catch (e) {
      /* not the same origin: the link opens inside the frame */
    }
  });
})();
"""

ICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#0969da"
 stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="6" y="2" width="12" height="20" rx="2"/>
<path d="M10 6h4M9 11h6M9 15h6M9 19h3"/></svg>
"""
