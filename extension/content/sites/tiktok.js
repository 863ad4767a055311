/*
 * TikTok (comments and captions). Assumes TikTok's data-e2e attributes, which are not translated:
 * comment box [data-e2e="comment-input"] holding a Draft.js editor, post button
 * [data-e2e="comment-post"], Enter posts a comment; the upload page's caption editor inside
 * [data-e2e="caption_container"] with the post button [data-e2e="post_video_button"]. A caption
 * always goes with a video (A5).
 */
LesfocusCore.registerAdapter({
  id: "tiktok",
  service: "tiktok",
  hosts: ["tiktok.com"],
  composer: '[data-e2e="comment-input"] [contenteditable="true"], [data-e2e="caption_container"] [contenteditable="true"]',
  sendButton: '[data-e2e="comment-post"], [data-e2e="post_video_button"]',
  enterSends: '[data-e2e="comment-input"] [contenteditable="true"]',
  ctrlEnterSends: true,
  scope: '[data-e2e="comment-input-container"], [data-e2e="upload_form"], [data-e2e="comment-input"]',
  media: '[data-e2e="upload_form"] video, [data-e2e="upload_form"] [data-e2e="video_preview"]',
  conversation: '[data-e2e="comment-input-container"]',
});
