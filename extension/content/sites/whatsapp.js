/*
 * WhatsApp Web. Assumes: the chat box is the contenteditable role="textbox" in the chat's
 * <footer> (inside #main), the caption box of the media preview is a contenteditable
 * role="textbox" in the preview panel; the send button contains the icon span[data-icon="send"]
 * (newer builds: data-icon="wds-ic-send-filled"); Enter sends, Shift+Enter makes a new line.
 * The media preview panel shows the attached photo or video as img/video. Every chat is a
 * conversation, so staff get the B4 reminder when school matters come up.
 */
LesfocusCore.registerAdapter({
  id: "whatsapp",
  service: "whatsapp",
  hosts: ["web.whatsapp.com"],
  composer: '[contenteditable="true"][role="textbox"]',
  sendButton: 'button:has(> span[data-icon="send"]), button:has(> span[data-icon="wds-ic-send-filled"]), ' +
    '[role="button"]:has(> span[data-icon="send"]), [role="button"]:has(> span[data-icon="wds-ic-send-filled"])',
  enterSends: '[contenteditable="true"][role="textbox"]',
  ctrlEnterSends: true,
  scope: "footer, [data-animate-media-preview]",
  media: "[data-animate-media-preview] img, [data-animate-media-preview] video",
  conversation: true,
});
