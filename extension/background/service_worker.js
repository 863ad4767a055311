/**
 * lesfocus background (module service worker in Chromium, module background script in Firefox).
 * Every listener is registered at the top level; work waits on the configuration promise.
 * It talks only to the configured lesfocus server, and only for reminder texts and lesson status.
 */
import { ext, readLocal, readPackageFile, writeLocal } from "./browser_api.js";
import { loadConfig } from "./config.js";
import { currentReminders, refreshReminders } from "./reminders.js";
import { chooseLanguage, strings } from "./locale.js";
import { forgetLessonStatus, lessonStatus } from "./lesson_status.js";

let ready = null;

/** (Re)load the configuration; if the policy was not readable yet, load again once it is. */
function reloadConfig() {
  const loading = loadConfig();
  ready = loading;
  loading.then((loaded) => {
    if (!loaded.complete) loaded.managedRead.then(() => { if (ready === loading) reloadConfig(); });
  }).catch((err) => console.warn("lesfocus: loading the configuration failed:", err));
  return loading;
}
reloadConfig();
let overlayCss = null;

function css() {
  if (!overlayCss) overlayCss = readPackageFile("ui/overlay.css");
  return overlayCss;
}

/** Everything a content script needs before the user posts: language, texts, configuration. */
async function contextFor(hostname) {
  const { config, complete } = await ready;
  const lang = chooseLanguage(config);
  const snoozeKey = `snooze|${hostname}`;
  const [reminders, messages, styles, snooze] = await Promise.all([
    currentReminders(config.serverUrl, config.audience, lang, config.school), strings(lang), css(),
    readLocal(snoozeKey),
  ]);
  return {
    lang,
    strings: messages,
    css: styles,
    reminders,
    snoozeUntil: snooze[snoozeKey] || 0,
    // Without the policy yet: the content script asks again shortly.
    partial: !complete,
    config: {
      audience: config.audience,
      schoolName: config.schoolName,
      schoolAliases: config.schoolAliases,
      snoozeMinutes: config.snoozeMinutes,
      onlyOnFindings: config.onlyOnFindings,
    },
  };
}

function handleMessage(message, sender) {
  // Only our own content scripts and pages talk to us.
  if (!sender || sender.id !== ext.runtime.id || !message) return undefined;
  switch (message.type) {
    case "context":
      return contextFor(String(message.host || ""));
    case "lessonStatus":
      return ready.then(({ config }) => lessonStatus(config.serverUrl, config.school));
    case "snooze": {
      const until = Number(message.until);
      if (!Number.isFinite(until)) return undefined;
      return writeLocal({ [`snooze|${String(message.host || "")}`]: until }).then(() => true);
    }
    case "config":
      return ready.then(({ config, managedKeys, locked }) => ({ config, managedKeys, locked }));
    default:
      return undefined;
  }
}

ext.runtime.onMessage.addListener((message, sender, sendResponse) => {
  const answer = handleMessage(message, sender);
  if (!answer) return false;
  answer.then(sendResponse, (err) => {
    console.warn(`lesfocus: answering ${message.type} failed:`, err);
    sendResponse(null);
  });
  return true; // the answer comes asynchronously
});

ext.storage.onChanged.addListener((changes, area) => {
  if (area === "managed" || (area === "local" && "options" in changes)) {
    reloadConfig();
    forgetLessonStatus();
    ready.then(({ config }) => {
      if (config.serverUrl) refreshReminders(config.serverUrl, config.audience, chooseLanguage(config), config.school);
    }).catch((err) => console.warn("lesfocus: reloading the configuration failed:", err));
  }
});

ext.runtime.onInstalled.addListener(() => {
  ready.then(({ config }) => {
    if (config.serverUrl) return refreshReminders(config.serverUrl, config.audience, chooseLanguage(config), config.school);
    return null;
  }).catch((err) => console.warn("lesfocus: first reminder fetch failed:", err));
});
