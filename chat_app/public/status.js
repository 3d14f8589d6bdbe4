// A banner at the top of the page while the server is still loading its index and models
// (GET /sanad/status, same origin); it goes away when they are ready. The text comes from the
// server in the browser's language (rag.ui_text). It never takes a click.
(function () {
  const meta = document.querySelector('meta[property="og:root_path"]');
  const root = ((meta && meta.content) || "").replace(/\/$/, "");
  const lang = (navigator.language || "en").toLowerCase();
  let banner = null;

  function show(text, failed) {
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "sanad-loading";
      banner.setAttribute("role", "status");
      banner.setAttribute("aria-live", "polite");
      document.body.appendChild(banner);
    }
    banner.textContent = text;  // text, never markup
    banner.dir = "auto";
    banner.classList.toggle("failed", !!failed);
  }

  async function poll() {
    try {
      const response = await fetch(`${root}/sanad/status?lang=${encodeURIComponent(lang)}`,
                                   { credentials: "same-origin", cache: "no-store" });
      const status = await response.json();
      if (status.ready) {
        if (banner) banner.remove();
        banner = null;
        return;
      }
      show(status.text, status.failed);
      if (status.failed) return;
    } catch (error) {
      // the server is starting or restarting: ask again
    }
    setTimeout(poll, 500);
  }

  if (document.body) poll();
  else document.addEventListener("DOMContentLoaded", poll);
})();
