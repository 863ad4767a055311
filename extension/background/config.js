/**
 * The extension's configuration: defaults, then the options page (storage.local "options"), then
 * enterprise policy (storage.managed, see managed_schema.json), which wins.
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
});

const CHECKS = {
  serverUrl: (v) => typeof v === "string" && (v === "" || /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(v)),
  audience: (v) => v === "student" || v === "staff",
  schoolName: (v) => typeof v === "string" && v.length <= 200,
  schoolAliases: (v) => Array.isArray(v) && v.every((a) => typeof a === "string" && a.length <= 200),
  school: (v) => typeof v === "string" && /^([a-z0-9][a-z0-9-]{0,63})?$/.test(v),
  locale: (v) => v === "" || v === "nl" || v === "en",
  snoozeMinutes: (v) => Number.isInteger(v) && v >= 0 && v <= 1440,
  onlyOnFindings: (v) => typeof v === "boolean",
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
 * The effective configuration and which keys the policy fixed.
 * @returns {Promise<{config: object, managedKeys: string[], complete: boolean, managedRead: Promise<object>}>}
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
  const config = { ...DEFAULTS, ...options, ...managed };
  config.serverUrl = config.serverUrl.replace(/\/+$/, "");
  return { config, managedKeys: Object.keys(managed), complete, managedRead };
}
