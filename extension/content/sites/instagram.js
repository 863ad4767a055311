/*
 * Instagram. Assumes: comment boxes are a textarea inside a <form> whose text-only role="button"
 * (no icon) posts, Enter posts; the "create post" flow is a role="dialog" whose header (the
 * element holding the h1) has a text-only role="button" that shares, and whose caption is a
 * contenteditable role="textbox"; Direct messages are contenteditable role="textbox" editors in
 * which Enter sends. A create-post dialog always carries a photo or video (A5).
 */
(function () {
  function isShareButton(el) {
    if (!el.matches('[role="button"], button')) return false;
    if (el.querySelector("svg")) return false;
    const form = el.closest("form");
    if (form && form.querySelector("textarea")) return true;
    const dialog = el.closest('[role="dialog"]');
    const header = el.closest("div:has(> h1), header:has(h1)");
    return Boolean(dialog && header && dialog.querySelector('[contenteditable="true"][role="textbox"]'));
  }
  LesfocusCore.registerAdapter({
    id: "instagram",
    service: "instagram",
    hosts: ["instagram.com"],
    composer: 'form textarea, [contenteditable="true"][role="textbox"]',
    isSendButton: isShareButton,
    enterSends: (composer) => composer.matches("form textarea") || !composer.closest('[role="dialog"]'),
    ctrlEnterSends: true,
    scope: 'form, [role="dialog"]',
    media: '[role="dialog"] img[src^="blob:"], [role="dialog"] video, [role="dialog"] [style*="blob:"]',
    conversation: 'form:has(textarea), [aria-label][role="grid"], section:has([role="grid"])',
  });
})();
