/**
 * The one place that touches the WebExtension namespace: Firefox has `browser` (promises),
 * Chromium `chrome` (promises in MV3).
 */
export const ext = globalThis.browser ?? globalThis.chrome;

/**
 * Read the policy IT set for this extension (storage.managed). Chromium answers {} when there is
 * none; Firefox rejects, which here also means "no policy".
 * @returns {Promise<object>}
 */
export function readManaged() {
  if (!ext.storage.managed) return Promise.resolve({});
  return ext.storage.managed.get(null).catch(() => ({}));
}

/** Read keys from storage.local, logging (not throwing) when that fails. */
export function readLocal(keys) {
  return ext.storage.local.get(keys).catch((err) => {
    console.warn("lesfocus: reading storage.local failed:", err);
    return {};
  });
}

/** Write to storage.local, logging when that fails. */
export function writeLocal(items) {
  return ext.storage.local.set(items).catch((err) => console.warn("lesfocus: writing storage.local failed:", err));
}

/** The extension's own file at `path`, as text. */
export function readPackageFile(path) {
  return fetch(ext.runtime.getURL(path)).then((r) => {
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.text();
  });
}
