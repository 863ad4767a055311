/**
 * The extension's configuration: defaults, then the options page (storage.local "options"), then
 * enterprise policy (storage.managed, see managed_schema.json), which wins.
 *
 * The student's own choices that weaken the reminders (USER_CHOICES: the audience, pausing them,
 * showing them only on findings) are locked at their defaults unless IT's policy lists them in
 * `userMayChange` (issue 14, item 6): without a policy nobody but IT can switch a student to
 * "staff" or pause the reminders for a day.
 */
import { readLocal, readManaged } from "./browser_api.js";

const MANAGED_WAIT_MS = 300;

export const DEFAULTS = Object.freeze({
  serverUrl: "",
  audience: "student",
  schoolName: "",
  schoolAliases: [],
  school: "",
  locale: "",
  snoozeMinutes: 0,
  onlyOnFindings: false,
  userMayChange: [],
});

/** Options the user may set only when the policy's userMayChange allows them. */
export const USER_CHOICES = Object.freeze(["audience", "snoozeMinutes", "onlyOnFindings"]);

const CHECKS = {
  serverUrl: (v) => typeof v === "string" && (v === "" || /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(v)),
  audience: (v) => v === "student" || v === "staff",
  schoolName: (v) => typeof v === "string" && v.length <= 200,
  schoolAliases: (v) => Array.isArray(v) && v.every((a) => typeof a === "string" && a.length <= 200),
  school: (v) => typeof v === "string" && /^([a-z0-9][a-z0-9-]{0,63})?$/.test(v),
  locale: (v) => v === "" || v === "nl" || v === "en",
  snoozeMinutes: (v) => Number.isInteger(v) && v >= 0 && v <= 1440,
  onlyOnFindings: (v) => typeof v === "boolean",
  userMayChange: (v) => Array.isArray(v) && v.every((k) => USER_CHOICES.includes(k)),
};

/** Keep only the known keys with valid values; report the others on the console. */
export function cleanConfig(raw, where) {
  const out = {};
  for (const [key, value] of Object.entries(raw || {})) {
    if (!(key in CHECKS)) continue;
    if (CHECKS[key](value)) out[key] = value;
    else console.warn(`lesfocus: ignoring ${where} setting ${key}: invalid value`, value);
  }
  return out;
}

/**
 * The effective configuration, which keys the policy fixed, and who set each locked key.
 * @returns {Promise<{config: object, managedKeys: string[], locked: Object<string, "policy"|"default">,
 *   complete: boolean, managedRead: Promise<object>}>}
 */
export async function loadConfig() {
  // Right after the browser starts, Chromium answers storage.managed only once its policy service
  // is up (measured: about 2.5 s). Don't keep a page waiting for that: go on without the policy
  // and say so (complete: false); the caller loads again when the policy arrives.
  const managedRead = readManaged();
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), MANAGED_WAIT_MS));
  const [managedRaw, local] = await Promise.all([Promise.race([managedRead, timeout]), readLocal("options")]);
  const complete = managedRaw !== null;
  const managed = cleanConfig(managedRaw || {}, "policy");
  const options = cleanConfig(local.options, "options");
  delete options.userMayChange; // the policy's alone
  const allowed = new Set(managed.userMayChange || []);
  const locked = {};
  for (const key of Object.keys(managed)) locked[key] = "policy";
  for (const key of USER_CHOICES) {
    if (allowed.has(key) || key in managed) continue;
    delete options[key];
    locked[key] = "default";
  }
  const config = { ...DEFAULTS, ...options, ...managed };
  config.serverUrl = config.serverUrl.replace(/\/+$/, "");
  return { config, managedKeys: Object.keys(managed), locked, complete, managedRead };
}
