// Right-to-left Arabic next to left-to-right English.
// - Every paragraph-like block of chat text gets dir="auto": it runs in the direction of its own
//   first strong character (HTML's dir=auto rule), so mixed answers read naturally.
// - Containers (a message, a source card, the welcome text) get an explicit dir from their first
//   strong character: dir="auto" on them would ignore text inside the auto blocks.
(function () {
  const BLOCKS = "p, li, blockquote, h1, h2, h3, h4, h5, h6, td, th, [role='article']";
  const CONTAINERS = ".message-content, .inline-text, .side-text, #welcome-screen";
  const FIRST_STRONG = /[A-Za-z\u00C0-\u024F\u0370-\u03FF\u0400-\u04FF]|[\u0590-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFC]/;
  const FACT_LINE = /^\s*(الإجابة:|Answer:)/;
  const RTL = /[\u0590-\u08FF\uFB1D-\uFDFF\uFE70-\uFEFC]/;

  function direction(text) {
    const first = (text || "").match(FIRST_STRONG);
    return first && RTL.test(first[0]) ? "rtl" : "ltr";
  }

  function update() {
    for (const container of document.querySelectorAll(CONTAINERS)) {
      const dir = direction(container.textContent);
      if (container.getAttribute("dir") !== dir) container.setAttribute("dir", dir);
      for (const block of container.querySelectorAll(BLOCKS)) {
        if (!block.hasAttribute("dir")) block.setAttribute("dir", "auto");
      }
    }
    for (const title of document.querySelectorAll(".bg-card .text-2xl")) {
      if (!title.hasAttribute("dir")) title.setAttribute("dir", "auto");
    }
    // The answer's first line states the fact ("الإجابة: … [1]" / "Answer: … [1]"): set it apart.
    for (const first of document.querySelectorAll(".message-content > p:first-child, .message-content > div > p:first-child, .message-content .prose > :first-child")) {
      if (!first.classList.contains("fact-line") && FACT_LINE.test(first.textContent || "")) first.classList.add("fact-line");
    }
    const input = document.getElementById("chat-input");
    if (input && !input.hasAttribute("dir")) input.setAttribute("dir", "auto");
  }

  let scheduled = false;
  const observer = new MutationObserver(() => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      update();
    });
  });

  function start() {
    update();
    observer.observe(document.body, { childList: true, subtree: true, characterData: true });
  }

  if (document.body) start();
  else document.addEventListener("DOMContentLoaded", start);
})();

// Chainlit loads one custom script: this one brings the source view's (sources.js) and the
// loading banner's (status.js) along.
(function () {
  for (const name of ["sources.js", "status.js"]) {
    const script = document.createElement("script");
    script.src = new URL(name, document.currentScript.src).href;
    document.head.appendChild(script);
  }
})();
