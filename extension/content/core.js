/*
 * lesfocus content-script core: intercepts every way to publish on a social site, shows the
 * reminder overlay in a shadow root, and performs the original action once if the user chooses
 * "Toch plaatsen". Site specifics live in content/sites/<site>.js, which call
 * LesfocusCore.registerAdapter(); the draft is analysed here, on the device, and never sent.
 */
(function () {
  "use strict";
  if (globalThis.LesfocusCore) return;

  const ext = globalThis.browser ?? globalThis.chrome;
  const checks = globalThis.LesfocusChecks;
  const OVERLAY_TAG = "lesfocus-reminder";
  const BANNER_TAG = "lesfocus-lesson-banner";
  const host = location.hostname;
  const PARTIAL_RETRY_MS = 1000;
  const PARTIAL_RETRY_LIMIT = 15;
  let partialRetries = 0;

  /** @type {object[]} */
  const adapters = [];
  let adapter = null;
  let context = null;
  let contextPromise = null;
  // While > 0 we are replaying an action the user confirmed: let it through untouched.
  let bypass = 0;
  let pending = null;

  /** Log a failed browser-API call without breaking the page. */
  function logFailure(what) {
    return (err) => console.warn(`lesfocus: ${what} failed:`, err);
  }

  function loadContext() {
    contextPromise = ext.runtime.sendMessage({ type: "context", host })
      .then((ctx) => {
        if (!ctx || !Array.isArray(ctx.reminders)) throw new Error("no context from the background");
        context = ctx;
        // The school's policy was not readable yet (browser just started): ask again soon.
        if (ctx.partial && partialRetries < PARTIAL_RETRY_LIMIT) {
          partialRetries += 1;
          setTimeout(loadContext, PARTIAL_RETRY_MS);
        }
        return ctx;
      })
      .catch((err) => {
        logFailure("loading reminders")(err);
        return context;
      });
    return contextPromise;
  }

  /**
   * Register a site adapter; the first one whose hosts match this page becomes active.
   * @param {{id: string, service: string, hosts: string[], composer: string, sendButton?: string,
   *   isSendButton?: function(Element): boolean, enterSends?: string|function(Element): boolean,
   *   ctrlEnterSends?: boolean, form?: string, media?: string, conversation?: string|boolean,
   *   scope?: string}} spec
   */
  function registerAdapter(spec) {
    adapters.push(spec);
    const matches = spec.hosts.some((h) => host === h || host.endsWith("." + h));
    if (!adapter && matches) {
      adapter = spec;
      loadContext();
      whenBodyReady(showLessonBannerIfBlocked);
    }
  }

  // ---- DOM helpers (they cross open shadow roots, which some sites use) -------------------------

  function parentAcrossShadow(el) {
    if (el.parentElement) return el.parentElement;
    const root = el.getRootNode && el.getRootNode();
    return root && root.host ? root.host : null;
  }

  function closestAcrossShadow(el, selector) {
    // Native closest() per tree (fast), hopping from a shadow root to its host.
    for (let node = el; node; ) {
      const found = node.closest(selector);
      if (found) return found;
      const root = node.getRootNode();
      node = root && root.host ? root.host : null;
    }
    return null;
  }

  function eventTarget(event) {
    const path = event.composedPath ? event.composedPath() : [];
    const first = path.length ? path[0] : event.target;
    return first && first.nodeType === 1 ? first : (first && first.parentElement) || null;
  }

  function isOurs(event) {
    const path = event.composedPath ? event.composedPath() : [];
    return path.some((n) => n && (n.localName === OVERLAY_TAG || n.localName === BANNER_TAG));
  }

  function findSendButton(el) {
    if (!el) return null;
    if (adapter.sendButton) {
      const button = closestAcrossShadow(el, adapter.sendButton);
      if (button) return button;
    }
    if (adapter.isSendButton) {
      for (let node = el; node; node = parentAcrossShadow(node)) {
        if (node.nodeType === 1 && adapter.isSendButton(node)) return node;
      }
    }
    return null;
  }

  function findComposer(el) {
    return el ? closestAcrossShadow(el, adapter.composer) : null;
  }

  function hasSendButton(root) {
    if (adapter.sendButton && root.querySelector(adapter.sendButton)) return true;
    if (adapter.isSendButton) {
      return Array.from(root.querySelectorAll('[role="button"], button')).some(adapter.isSendButton);
    }
    return false;
  }

  /** The smallest ancestor of `el` that holds the composer(s) and send button belonging together. */
  function scopeOf(el, needComposer) {
    if (adapter.scope) {
      const scoped = closestAcrossShadow(el, adapter.scope);
      if (scoped) return scoped;
    }
    for (let node = parentAcrossShadow(el); node; node = parentAcrossShadow(node)) {
      if (node === document.documentElement) return node;
      if (needComposer ? node.querySelector(adapter.composer) : hasSendButton(node)) return node;
    }
    return document.documentElement;
  }

  function textOf(composer) {
    if (composer.matches("textarea, input")) return composer.value;
    return composer.innerText || composer.textContent || "";
  }

  /** What the user is about to publish from `scope`: the text of its composers and any media. */
  function readDraft(scope, composer) {
    const composers = composer && !scope.contains(composer) ? [composer]
      : Array.from(scope.querySelectorAll(adapter.composer));
    if (composer && !composers.includes(composer)) composers.push(composer);
    const text = composers.map(textOf).join("\n").trim();
    const files = Array.from(scope.querySelectorAll('input[type="file"]')).some((i) => i.files && i.files.length);
    const hasMedia = files || Boolean(adapter.media && scope.querySelector(adapter.media));
    const conv = adapter.conversation;
    const inConversation = conv === true || Boolean(typeof conv === "string" && closestAcrossShadow(composer || scope, conv));
    return { text, hasMedia, inConversation };
  }

  function enterSendsIn(composer) {
    const rule = adapter.enterSends;
    if (!rule) return false;
    return typeof rule === "function" ? rule(composer) : composer.matches(rule);
  }

  // ---- interception -----------------------------------------------------------------------------

  function snoozed() {
    return Boolean(context && context.snoozeUntil && context.snoozeUntil > Date.now());
  }

  /**
   * Decide whether this publish action gets the overlay; if so, stop it and show the overlay.
   * @param {Event} event the original event, stopped here
   * @param {{replay: function(): void, focusBack: Element|null, scope: Element, composer: Element|null}} action
   */
  function intercept(event, action) {
    if (pending && pending.hostEl && !pending.hostEl.isConnected) {
      // The page threw our overlay away (re-rendered its body): never let that block posting.
      pending = null;
    }
    if (pending) {
      // The overlay is already up for this page: swallow duplicates until the user decides.
      stop(event);
      return;
    }
    const draft = readDraft(action.scope, action.composer);
    if (!draft.text && !draft.hasMedia) return;
    if (!context) {
      // The page has just loaded and the configuration is still on its way: hold the action
      // and decide when it arrives (at worst the action is then performed unchanged).
      stop(event);
      pending = { action, analysis: null, done: false };
      const held = pending;
      contextPromise.then(() => decide(held, draft, true));
      return;
    }
    const state = { action, analysis: null, done: false };
    if (decide(state, draft, false)) stop(event);
  }

  /**
   * Analyse the draft and show the overlay if it applies. Returns true when the overlay is shown.
   * A held action that needs no overlay is performed right away.
   */
  function decide(state, draft, held) {
    const cfg = (context && context.config) || {};
    state.analysis = checks.analyzeDraft(draft, cfg);
    const findings = state.analysis.triggers.filter((t) => t !== "always");
    if (findings.length === 0 && (cfg.onlyOnFindings || snoozed())) {
      if (held) {
        pending = null;
        replayWithBypass(state.action.replay);
      }
      return false;
    }
    pending = state;
    showOverlay(state);
    return true;
  }

  function stop(event) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }

  function replayWithBypass(fn) {
    bypass += 1;
    try {
      fn();
    } finally {
      bypass -= 1;
    }
  }

  function onClick(event) {
    if (bypass || !adapter || !event.isTrusted || event.button !== 0) return;
    const button = findSendButton(eventTarget(event));
    if (button && isOurs(event)) return;
    if (!button || button.matches('[disabled], [aria-disabled="true"]')) return;
    intercept(event, {
      scope: scopeOf(button, true),
      composer: null,
      focusBack: button,
      replay: () => button.click(),
    });
  }

  function onKeyDown(event) {
    if (bypass || !adapter || !event.isTrusted) return;
    if ((event.key !== "Enter" && event.key !== " ") || isOurs(event)) return;
    // Enter that confirms an IME candidate is not a send (keyCode 229 covers older engines).
    if (event.isComposing || event.keyCode === 229) return;
    const target = eventTarget(event);
    const modifier = event.ctrlKey || event.metaKey;
    const button = findSendButton(target);
    if (button && !modifier && !event.altKey && !event.shiftKey) {
      // Keyboard activation of the send button (Enter or Space): replay as a click, the one
      // path every site's button answers to, so it happens exactly once.
      if (button.matches('[disabled], [aria-disabled="true"]')) return;
      intercept(event, {
        scope: scopeOf(button, true),
        composer: null,
        focusBack: button,
        replay: () => button.click(),
      });
      return;
    }
    if (event.key !== "Enter") return;
    const composer = findComposer(target);
    if (!composer) return;
    const sends = modifier ? adapter.ctrlEnterSends !== false
      : !event.shiftKey && !event.altKey && enterSendsIn(composer);
    if (!sends) return;
    const init = {
      key: event.key, code: event.code, keyCode: 13, which: 13, ctrlKey: event.ctrlKey,
      metaKey: event.metaKey, shiftKey: false, altKey: false, bubbles: true, cancelable: true, composed: true,
    };
    intercept(event, {
      scope: scopeOf(composer, false),
      composer,
      focusBack: target,
      replay: () => {
        target.focus();
        target.dispatchEvent(new KeyboardEvent("keydown", init));
      },
    });
  }

  function onSubmit(event) {
    if (bypass || !adapter || isOurs(event)) return;
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    const publishes = adapter.form ? form.matches(adapter.form) : Boolean(form.querySelector(adapter.composer));
    if (!publishes) return;
    const submitter = event.submitter || null;
    intercept(event, {
      scope: form,
      composer: null,
      focusBack: submitter || form.querySelector(adapter.composer),
      replay: () => {
        if (submitter && submitter.isConnected && submitter.form === form) form.requestSubmit(submitter);
        else form.requestSubmit();
      },
    });
  }

  // Capture phase on window, registered at document_start: we run before the page's own handlers.
  window.addEventListener("click", onClick, true);
  window.addEventListener("keydown", onKeyDown, true);
  window.addEventListener("submit", onSubmit, true);

  // ---- the overlay ------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const child of children || []) node.append(child);
    return node;
  }

  /** "Gevonden in je bericht: een telefoonnummer en een naam en een klas" (kinds, no values). */
  function foundLine(kinds, s) {
    const words = Array.from(new Set(kinds || [])).map((kind) => s[`found_${kind}`]).filter(Boolean);
    if (words.length === 0) return [];
    const and = ` ${s.foundAnd || "en"} `;
    const text = words.length === 1 ? words[0] : `${words.slice(0, -1).join(", ")}${and}${words[words.length - 1]}`;
    return [el("span", { class: "found" }, [`${s.foundLabel || "Gevonden in je bericht:"} ${text}`])];
  }

  function showOverlay(state) {
    const ctx = context || { strings: {}, reminders: [], config: {}, lang: "nl", css: "" };
    const s = ctx.strings || {};
    const cfg = ctx.config || {};
    const reminders = checks.selectReminders(ctx.reminders, state.analysis.triggers, cfg.audience || "student");

    const hostEl = document.createElement(OVERLAY_TAG);
    hostEl.setAttribute("style", "all: initial; position: fixed; inset: 0; z-index: 2147483647;");
    const root = hostEl.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = ctx.css || "";

    const kinds = state.analysis.kinds || {};
    const list = el("ul", { class: "reminders", id: "lesfocus-reminders" },
      reminders.map((r) => el("li", { "data-article": r.article, "data-trigger": r.trigger }, [
        el("span", { class: "article", "aria-label": `${s.articleLabel || "Artikel"} ${r.article}` }, [r.article]),
        el("span", { class: "text" }, [checks.withoutArticleCitation(r.text, r.article)]),
        ...foundLine(kinds[r.trigger], s),
      ])));
    const editButton = el("button", { type: "button", class: "edit", "data-action": "edit" }, [s.editButton || "Aanpassen"]);
    const postButton = el("button", { type: "button", class: "post", "data-action": "post" }, [s.postButton || "Toch plaatsen"]);
    const dialog = el("div", {
      class: "dialog", role: "dialog", "aria-modal": "true", lang: ctx.lang || "nl",
      "aria-labelledby": "lesfocus-title", "aria-describedby": "lesfocus-intro lesfocus-reminders",
    }, [
      el("h2", { id: "lesfocus-title" }, [s.overlayTitle || "Even nadenken voor je plaatst"]),
      el("p", { id: "lesfocus-intro", class: "intro" }, [s.overlayIntro || ""]),
      list,
      el("div", { class: "actions" }, [editButton, postButton]),
    ]);
    root.append(style, el("div", { class: "backdrop" }), dialog);

    const close = () => {
      hostEl.remove();
      pending = null;
    };
    const edit = () => {
      if (state.done) return;
      state.done = true;
      close();
      const back = state.action.composer || state.action.scope.querySelector(adapter.composer) || state.action.focusBack;
      if (back && back.isConnected) back.focus();
    };
    const post = () => {
      if (state.done) return;
      state.done = true;
      close();
      if (cfg.snoozeMinutes > 0) startSnooze(cfg.snoozeMinutes);
      replayWithBypass(state.action.replay);
    };
    editButton.addEventListener("click", edit);
    postButton.addEventListener("click", post);
    dialog.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        edit();
      } else if (event.key === "Tab") {
        // Focus trap: Tab cycles between the two choices.
        event.preventDefault();
        const next = root.activeElement === editButton ? postButton : editButton;
        next.focus();
      }
      // Keys typed in the dialog are ours, not the page's shortcuts.
      event.stopPropagation();
    });
    dialog.addEventListener("keyup", (event) => event.stopPropagation());
    // A click on the backdrop is "not now": back to the draft, never a silent send.
    root.querySelector(".backdrop").addEventListener("click", edit);

    state.hostEl = hostEl;
    (document.body || document.documentElement).append(hostEl);
    editButton.focus();
  }

  function startSnooze(minutes) {
    const until = Date.now() + minutes * 60 * 1000;
    if (context) context.snoozeUntil = until;
    ext.runtime.sendMessage({ type: "snooze", host, until }).catch(logFailure("saving the snooze"));
  }

  // ---- lesson-time banner -----------------------------------------------------------------------

  function whenBodyReady(fn) {
    if (document.body) fn();
    else document.addEventListener("DOMContentLoaded", fn, { once: true });
  }

  function showLessonBannerIfBlocked() {
    Promise.all([contextPromise, ext.runtime.sendMessage({ type: "lessonStatus" })])
      .then(([ctx, status]) => {
        if (!ctx || !status || !status.in_lesson) return;
        const blocked = Array.isArray(status.blocked_services) ? status.blocked_services : [];
        const ids = blocked.map((b) => (typeof b === "string" ? b : b && (b.id || b.service)));
        if (!ids.includes(adapter.service)) return;
        showBanner(ctx, status, adapter.service);
      })
      .catch(logFailure("checking the lesson status"));
  }

  /**
   * The banner for a blocked service: its own end time from the lesson status (`services`), which
   * is the end the gateway enforces; the overall `until` only from a server that sends no
   * per-service times.
   */
  function showBanner(ctx, status, serviceId) {
    if (document.querySelector(BANNER_TAG)) return;
    const s = ctx.strings || {};
    const hostEl = document.createElement(BANNER_TAG);
    hostEl.setAttribute("style", "all: initial; position: fixed; left: 0; right: 0; top: 0; z-index: 2147483646;");
    const root = hostEl.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = ctx.css || "";
    let until = "";
    const own = status.services && status.services[serviceId];
    const end = own && typeof own.until === "string" ? own.until : status.until;
    if (end) {
      const d = new Date(end);
      if (!Number.isNaN(d.getTime())) {
        until = (s.bannerUntil || "").replace("{time}", d.toLocaleTimeString(ctx.lang, { hour: "2-digit", minute: "2-digit" }));
      }
    }
    const closeButton = el("button", { type: "button", class: "close", "aria-label": s.bannerClose || "Sluiten" }, ["\u00d7"]);
    const banner = el("div", { class: "banner", role: "status", "aria-live": "polite", lang: ctx.lang || "nl" }, [
      el("strong", {}, [s.bannerTitle || ""]), " ",
      el("span", { class: "text" }, [s.bannerText || ""]), " ",
      el("span", { class: "until" }, [until]),
      closeButton,
    ]);
    closeButton.addEventListener("click", () => hostEl.remove());
    root.append(style, banner);
    document.documentElement.append(hostEl);
  }

  // Options or policy changed: use the new configuration from the next action on.
  ext.storage.onChanged.addListener(() => {
    if (adapter) loadContext();
  });

  globalThis.LesfocusCore = { registerAdapter, adapters };
})();
