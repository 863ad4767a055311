/*
 * Facebook. Facebook has no test ids; the adapter relies on structure and roles:
 * - composers are contenteditable elements with role="textbox" (the Lexical editor);
 * - the "create post" composer sits in a role="dialog" with a form; its publish button is the
 *   last role="button" of that form (the buttons before it add photos, feelings, ...);
 * - comment and Messenger boxes are role="textbox" editors outside that dialog form, where Enter
 *   sends and Shift+Enter makes a new line; their send button is a role="button" containing
 *   the send icon, marked here by the form's last role="button".
 * Photos and videos added to a draft appear as img/video elements in the form.
 */
(function () {
  const COMPOSER = '[contenteditable="true"][role="textbox"]';
  function isLastButtonOfComposerForm(el) {
    if (!el.matches('[role="button"], button[type="submit"]')) return false;
    const form = el.closest("form");
    if (!form || !form.querySelector(COMPOSER)) return false;
    const buttons = form.querySelectorAll('[role="button"], button');
    return buttons[buttons.length - 1] === el;
  }
  LesfocusCore.registerAdapter({
    id: "facebook",
    service: "facebook",
    hosts: ["facebook.com"],
    composer: COMPOSER,
    isSendButton: isLastButtonOfComposerForm,
    enterSends: (composer) => !composer.closest('[role="dialog"] form[method="POST" i]'),
    ctrlEnterSends: true,
    scope: "form",
    media: 'img[data-visualcompletion="media-vc-image"], [data-draft-attachment] img, [data-draft-attachment] video',
    conversation: '[role="article"], [data-pagelet*="Messenger" i], [aria-label][role="main"] [role="grid"]',
  });
})();
