/*
 * YouTube (comments, replies and community posts). Assumes YouTube's own custom elements and ids,
 * which do not depend on the interface language: the comment editor is #contenteditable-root
 * inside ytd-commentbox (comments and replies) or ytd-backstage-post-dialog-renderer (community
 * posts); the post button is #submit-button (a ytd-button-renderer wrapping a <button>).
 * Enter makes a new line; Ctrl/Cmd+Enter posts. Community posts with an image show it in
 * #image-preview / ytd-backstage-image-renderer.
 */
LesfocusCore.registerAdapter({
  id: "youtube",
  service: "youtube",
  hosts: ["youtube.com"],
  composer: '#contenteditable-root[contenteditable="true"], ytd-commentbox textarea, #contenteditable-textarea [contenteditable="true"]',
  sendButton: "ytd-commentbox #submit-button button, ytd-commentbox #submit-button, " +
    "ytd-backstage-post-dialog-renderer #submit-button button, ytd-backstage-post-dialog-renderer #submit-button",
  ctrlEnterSends: true,
  scope: "ytd-commentbox, ytd-backstage-post-dialog-renderer",
  media: "#image-preview img, ytd-backstage-image-renderer img, ytd-backstage-post-dialog-renderer video",
  conversation: "ytd-comment-replies-renderer, ytd-comment-thread-renderer #replies",
});
