/**
 * The language of the overlay: the policy's or options' locale, else the one the browser chose
 * from _locales (its "lang" message), else Dutch. The strings come from _locales/<lang>.
 */
import { ext, readPackageFile } from "./browser_api.js";

export const LANGUAGES = ["nl", "en"];
const loaded = new Map();

/** The language to use for this configuration. */
export function chooseLanguage(config) {
  if (LANGUAGES.includes(config.locale)) return config.locale;
  const chosen = ext.i18n.getMessage("lang");
  return LANGUAGES.includes(chosen) ? chosen : "nl";
}

/** The overlay strings of one language as {name: text}. */
export async function strings(lang) {
  if (!loaded.has(lang)) {
    const messages = JSON.parse(await readPackageFile(`_locales/${lang}/messages.json`));
    const flat = {};
    for (const [name, entry] of Object.entries(messages)) flat[name] = entry.message;
    loaded.set(lang, flat);
  }
  return loaded.get(lang);
}
