// lesfocus dashboard: countdowns, reload at lesson or exception end, copy buttons, confirmations.
"use strict";

/** Format a number of seconds as m:ss or h:mm:ss. */
function formatRemaining(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function tick() {
  const now = Date.now();
  let reload = false;
  for (const el of document.querySelectorAll("[data-end]")) {
    const left = (Date.parse(el.dataset.end) - now) / 1000;
    el.textContent = formatRemaining(left);
    if (left <= 0 && !el.dataset.done) { el.dataset.done = "1"; reload = true; }
  }
  for (const el of document.querySelectorAll("[data-reload-at]")) {
    if (Date.parse(el.dataset.reloadAt) <= now && !el.dataset.done) { el.dataset.done = "1"; reload = true; }
  }
  // The server decides what is blocked; reload so the page shows its view once a time passes.
  if (reload) setTimeout(() => window.location.reload(), 1500);
}

/** Mark which sides of a scroller have more to show (CSS fades the tab bar's edges). */
function markOverflow(el) {
  el.classList.toggle("more-left", el.scrollLeft > 2);
  el.classList.toggle("more-right", el.scrollLeft + el.clientWidth < el.scrollWidth - 2);
}

/** Phones: the current tab in view, and a line under tables that scroll sideways. */
function fitNarrowScreens() {
  const tabs = document.querySelector(".tabs");
  if (tabs) {
    const current = tabs.querySelector('[aria-current="page"]');
    if (current) tabs.scrollLeft = current.offsetLeft - (tabs.clientWidth - current.offsetWidth) / 2;
    markOverflow(tabs);
    tabs.addEventListener("scroll", () => markOverflow(tabs), { passive: true });
  }
  const hint = document.body.dataset.scrollHint;
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    const scrolls = wrap.scrollWidth > wrap.clientWidth + 2;
    wrap.classList.toggle("scrolls", scrolls);
    // Above the table, so it is read before a long table, not after it.
    let line = wrap.previousElementSibling;
    if (!line || !line.classList.contains("scroll-hint")) {
      if (!scrolls || !hint) continue;
      line = document.createElement("p");
      line.className = "scroll-hint";
      line.textContent = hint;
      wrap.before(line);
    }
    line.classList.toggle("shown", scrolls);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  fitNarrowScreens();
  window.addEventListener("resize", fitNarrowScreens);
  if (document.querySelector("[data-end], [data-reload-at]")) {
    tick();
    setInterval(tick, 1000);
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", () => {
      navigator.clipboard.writeText(button.dataset.copy)
        .then(() => { button.textContent = "✓"; })
        .catch((err) => console.warn("copy failed", err));
    });
  }
  // "Nu": refresh the room's state now and then, but never while the teacher is choosing.
  // The shortest interval on the page counts: a room waiting for its gateway asks for seconds.
  const intervals = [...document.querySelectorAll("[data-refresh]")]
    .map((el) => Number(el.dataset.refresh) || 60);
  if (intervals.length) {
    const seconds = Math.max(1, Math.min(...intervals));
    setInterval(() => {
      const busy = document.querySelector("form.grant input:checked")
        || ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
      if (!busy) window.location.reload();
    }, seconds * 1000);
  }
  // The leader's form: show the room or group choice only for the scope that needs it.
  const scope = document.getElementById("f-scope");
  if (scope) {
    const sync = () => {
      for (const [id, value] of [["f-room", "room"], ["f-group", "group"]]) {
        const field = document.getElementById(id)?.closest(".field");
        if (field) field.hidden = scope.value !== value;
      }
    };
    scope.addEventListener("change", sync);
    sync();
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
