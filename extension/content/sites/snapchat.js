/*
 * Snapchat for web (web.snapchat.com, snapchat.com/web). The least documented adapter: it relies
 * only on form structure. Assumes the chat box is a textarea, text input or contenteditable
 * role="textbox" inside the chat <form>, which is submitted (Enter, or its submit button) to
 * send; Enter sends, Shift+Enter makes a new line. Snaps and photos are attached through a file
 * input or shown as a preview img/video in that form.
 */
LesfocusCore.registerAdapter({
  id: "snapchat",
  service: "snapchat",
  hosts: ["web.snapchat.com", "snapchat.com"],
  composer: 'form textarea, form input[type="text"], form [contenteditable="true"][role="textbox"]',
  sendButton: 'form:has(textarea, input[type="text"], [contenteditable="true"]) button[type="submit"]',
  enterSends: 'form textarea, form [contenteditable="true"][role="textbox"]',
  ctrlEnterSends: true,
  scope: "form",
  media: 'form img[src^="blob:"], form video',
  conversation: true,
});
