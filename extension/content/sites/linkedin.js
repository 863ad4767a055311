/*
 * LinkedIn. Assumes LinkedIn's BEM class names, which are not translated: the share box editor
 * .ql-editor (or .editor-content [contenteditable]) in the share modal with the post button
 * .share-actions__primary-action; comment boxes form.comments-comment-box__form with
 * .comments-comment-box__submit-button (a real submit button); messaging form.msg-form with
 * .msg-form__contenteditable and .msg-form__send-button, where Enter sends. Images and videos in
 * a draft show up in .share-creation-state__preview-container / .comments-comment-box__image.
 */
LesfocusCore.registerAdapter({
  id: "linkedin",
  service: "linkedin",
  hosts: ["linkedin.com"],
  composer: '.ql-editor[contenteditable="true"], .editor-content [contenteditable="true"], .msg-form__contenteditable[contenteditable="true"]',
  sendButton: ".share-actions__primary-action, .comments-comment-box__submit-button, .msg-form__send-button",
  enterSends: ".msg-form__contenteditable",
  ctrlEnterSends: true,
  form: "form.comments-comment-box__form, form.msg-form",
  scope: ".share-creation-state, .share-box, form.comments-comment-box__form, form.msg-form",
  media: ".share-creation-state__preview-container img, .share-creation-state__preview-container video, .comments-comment-box__image img, .msg-form__attachment img",
  conversation: "form.comments-comment-box__form, form.msg-form",
});
