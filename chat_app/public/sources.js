// The whole article of a source, in Chainlit's side view.
// - It opens from the answer's [n] links (Chainlit's links to the side element named "[n]") and
//   from a source card's title, which follows its own message's [n] link.
// - Chainlit 2.12 also opens the side view by itself whenever side elements arrive, i.e. after
//   every answer, with the articles of every answer so far: an opening that no click asked for
//   is closed at once.
// - The first highlighted quote of an opened article is scrolled into view.
(function () {
  const ASKED_WITHIN_MS = 5000; // a click, then Chainlit fetches the article and draws it
  const CARD_NUMBER = /^\s*\[(\d+)\]/;
  const seen = new WeakSet();
  let askedAt = 0;

  function linkTo(number, from) {
    const message = from.closest(".message-content");
    if (!message) return null;
    return [...message.querySelectorAll("a.element-link")].find((a) => a.textContent.trim() === `[${number}]`) || null;
  }

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    if (target.closest("a.element-link")) {
      askedAt = Date.now();
      return;
    }
    const title = target.closest(".source-title");
    const number = title && (title.textContent.match(CARD_NUMBER) || [])[1];
    const link = number && linkTo(number, title);
    if (link) link.click();
  }, true);

  function close(content) {
    const dialog = content.closest("[role='dialog']"); // the narrow-screen sheet
    if (dialog) {
      dialog.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
      return;
    }
    const back = document.querySelector("#side-view-title button");
    if (back) back.click();
  }

  function markCardTitles() {
    for (const title of document.querySelectorAll(".bg-card .text-2xl")) {
      if (!title.classList.contains("source-title") && CARD_NUMBER.test(title.textContent || "")) {
        title.classList.add("source-title");
      }
    }
  }

  // Runs in the mutation observer's microtask, before the browser paints an unasked opening.
  function checkSideView() {
    const content = document.getElementById("side-view-content");
    if (!content) return;
    const fresh = [...content.children].filter((child) => !seen.has(child) && !child.classList.contains("animate-pulse"));
    if (!fresh.length) return;
    fresh.forEach((child) => seen.add(child));
    if (Date.now() - askedAt > ASKED_WITHIN_MS) {
      close(content);
      return;
    }
    const quote = content.querySelector(".side-text .font-bold");
    if (quote) scrollToMiddle(quote);
  }

  // Only the side view's own box scrolls, and only vertically: scrollIntoView would also scroll
  // the page sideways towards the panel while it still slides in.
  function scrollToMiddle(quote) {
    for (let box = quote.parentElement; box; box = box.parentElement) {
      const overflow = getComputedStyle(box).overflowY;
      if ((overflow === "auto" || overflow === "scroll") && box.scrollHeight > box.clientHeight) {
        const q = quote.getBoundingClientRect();
        const b = box.getBoundingClientRect();
        box.scrollTop += q.top - b.top - (box.clientHeight - q.height) / 2;
        return;
      }
    }
  }

  let scheduled = false;
  const observer = new MutationObserver(() => {
    checkSideView();
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      markCardTitles();
    });
  });

  function start() {
    markCardTitles();
    observer.observe(document.body, { childList: true, subtree: true });
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
