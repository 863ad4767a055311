/**
 * Reminder texts: fetched from the lesfocus server (GET /api/v1/reminders, with ETag), cached in
 * storage.local, and the bundled defaults (data/reminders.json) when there is no server or it
 * cannot be reached. Only the audience and language are sent, and the school's code when one is
 * configured (a server with several schools needs it).
 */
import { readLocal, readPackageFile, writeLocal } from "./browser_api.js";

const REFRESH_AFTER_MS = 10 * 60 * 1000;
const FETCH_TIMEOUT_MS = 3000;
const ARTICLE_RE = /^[AB]\d{1,2}$/;
const AUDIENCES = ["student", "staff", "all"];
const TRIGGERS = ["always", "personal_data", "media", "school_mention", "insult", "school_matter"];

let bundled = null;
const refreshing = new Map();

/** Reminder entries in the one shape the content script uses; entries that do not fit are dropped. */
export function normalizeReminders(payload, lang) {
  const list = Array.isArray(payload) ? payload : payload && Array.isArray(payload.reminders) ? payload.reminders : [];
  const out = [];
  for (const r of list) {
    if (!r || !ARTICLE_RE.test(r.article) || !AUDIENCES.includes(r.audience) || !TRIGGERS.includes(r.trigger)) continue;
    const text = typeof r.text === "string" ? r.text : r.texts && (r.texts[lang] || r.texts.nl);
    if (typeof text !== "string" || !text.trim()) continue;
    out.push({ article: r.article, audience: r.audience, trigger: r.trigger, text });
  }
  return out;
}

/** The bundled default reminders for one language. */
export async function bundledReminders(lang) {
  if (!bundled) bundled = JSON.parse(await readPackageFile("data/reminders.json"));
  return normalizeReminders(bundled, lang);
}

function cacheKey(serverUrl, audience, lang, school) {
  return `reminders|${serverUrl}|${audience}|${lang}${school ? `|${school}` : ""}`;
}

async function fetchFromServer(serverUrl, audience, lang, school, cached) {
  const query = `audience=${encodeURIComponent(audience)}&lang=${encodeURIComponent(lang)}` +
    (school ? `&school=${encodeURIComponent(school)}` : "");
  const url = `${serverUrl}/api/v1/reminders?${query}`;
  const headers = { Accept: "application/json" };
  if (cached && cached.etag) headers["If-None-Match"] = cached.etag;
  const response = await fetch(url, {
    headers, cache: "no-store", credentials: "omit", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  });
  const key = cacheKey(serverUrl, audience, lang, school);
  if (response.status === 304 && cached) {
    const entry = { ...cached, fetchedAt: Date.now() };
    await writeLocal({ [key]: entry });
    return entry;
  }
  if (!response.ok) throw new Error(`reminders: HTTP ${response.status}`);
  const reminders = normalizeReminders(await response.json(), lang);
  if (reminders.length === 0) throw new Error("reminders: the server sent no usable reminders");
  const entry = { etag: response.headers.get("ETag"), reminders, fetchedAt: Date.now() };
  await writeLocal({ [key]: entry });
  return entry;
}

/** Fetch (or revalidate) the server's reminders now; resolves to the cache entry or null. */
export function refreshReminders(serverUrl, audience, lang, school = "") {
  const key = cacheKey(serverUrl, audience, lang, school);
  if (refreshing.has(key)) return refreshing.get(key);
  const job = readLocal(key)
    .then((stored) => fetchFromServer(serverUrl, audience, lang, school, stored[key]))
    .catch((err) => {
      console.warn("lesfocus: fetching reminders failed, using the cached or bundled texts:", err);
      return null;
    })
    .finally(() => refreshing.delete(key));
  refreshing.set(key, job);
  return job;
}

/**
 * The reminders to use now: the cached server texts (revalidated in the background when old),
 * or the first fetch, or the bundled defaults.
 */
export async function currentReminders(serverUrl, audience, lang, school = "") {
  if (!serverUrl) return bundledReminders(lang);
  const key = cacheKey(serverUrl, audience, lang, school);
  const cached = (await readLocal(key))[key];
  if (cached && cached.reminders && cached.reminders.length) {
    if (Date.now() - (cached.fetchedAt || 0) > REFRESH_AFTER_MS) refreshReminders(serverUrl, audience, lang, school);
    return cached.reminders;
  }
  const fresh = await refreshReminders(serverUrl, audience, lang, school);
  return fresh ? fresh.reminders : bundledReminders(lang);
}
