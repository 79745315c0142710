// Pacer's web view: keeps a page's live parts current without a reload. Every element marked
// `data-live` (with an id) is replaced by its counterpart in a fresh copy of the page, fetched
// every few seconds while the tab is visible; forms and scroll positions are left alone.
"use strict";

(function () {
  const seconds = Number(document.body.dataset.refresh || 0);
  if (!seconds) {
    return;
  }
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { Accept: "text/html" },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) {
        stamp("update failed (" + response.status + ")");
        return;
      }
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const live of document.querySelectorAll("[data-live][id]")) {
        const next = fresh.getElementById(live.id);
        if (next && next.innerHTML !== live.innerHTML) {
          live.replaceChildren(...Array.from(next.childNodes).map((n) => document.importNode(n, true)));
        }
      }
      const title = fresh.querySelector("title");
      if (title) {
        document.title = title.textContent;
      }
      stamp("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      stamp("pacerd unreachable");
    } finally {
      busy = false;
    }
  }

  function stamp(text) {
    const note = document.getElementById("updated");
    if (note) {
      note.textContent = text;
    }
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
})();
