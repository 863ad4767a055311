/*
 * X (x.com, twitter.com). Assumes: composers carry data-testid="tweetTextarea_N" (timeline box,
 * the compose modal, replies, threads) and data-testid="dmComposerTextInput" (messages); the post
 * buttons data-testid="tweetButtonInline" / "tweetButton", the message send button
 * "dmComposerSendButton"; attached media show up in data-testid="attachments". Ctrl/Cmd+Enter posts
 * from a composer; Enter sends only in messages. No translated aria-label is used.
 */
LesfocusCore.registerAdapter({
  id: "x",
  service: "twitter",
  hosts: ["x.com", "twitter.com"],
  composer: '[data-testid^="tweetTextarea_"][contenteditable="true"], [data-testid="dmComposerTextInput"]',
  sendButton: '[data-testid="tweetButtonInline"], [data-testid="tweetButton"], [data-testid="dmComposerSendButton"]',
  enterSends: '[data-testid="dmComposerTextInput"]',
  ctrlEnterSends: true,
  media: '[data-testid="attachments"] img, [data-testid="attachments"] video',
  conversation: '[data-testid="DmActivityViewport"], [data-testid="DMDrawer"], article[data-testid="tweet"] ~ *, [data-testid="inline_reply_offscreen"]',
});
