/*
 * Options page: the settings the school's policy does not fix. Locked fields say who set them
 * (the school's policy, or the default that only the policy can open up); the rest is saved in
 * storage.local under "options".
 */
const ext = globalThis.browser ?? globalThis.chrome;
const FIELDS = ["serverUrl", "school", "audience", "schoolName", "schoolAliases", "locale", "snoozeMinutes", "onlyOnFindings"];

function translate() {
  for (const node of document.querySelectorAll("[data-i18n]")) {
    const text = ext.i18n.getMessage(node.dataset.i18n);
    if (text) node.textContent = text;
  }
  document.documentElement.lang = ext.i18n.getMessage("lang") || "nl";
}

const USER_CHOICES = ["audience", "snoozeMinutes", "onlyOnFindings"];

/** The line under a field saying who set it. */
function whoSetIt(field, name, how) {
  const id = `who-${name}`;
  let note = document.getElementById(id);
  const key = how === "policy" ? "optionsSetByPolicy" : how === "default" ? "optionsLockedDefault"
    : USER_CHOICES.includes(name) ? "optionsChoiceAllowed" : "";
  if (!key) {
    if (note) note.remove();
    return;
  }
  if (!note) {
    note = document.createElement("p");
    note.id = id;
    note.className = "who";
    (field.closest("label.check") || field).after(note);
  }
  note.dataset.who = how || "user";
  note.textContent = ext.i18n.getMessage(key);
  field.setAttribute("aria-describedby", id);
}

function fill(form, config, managedKeys, locked) {
  for (const name of FIELDS) {
    const field = form.elements[name];
    const value = config[name];
    if (field.type === "checkbox") field.checked = Boolean(value);
    else if (name === "schoolAliases") field.value = (value || []).join("\n");
    else field.value = value ?? "";
    const how = (locked || {})[name] || (managedKeys.includes(name) ? "policy" : "");
    field.disabled = Boolean(how);
    field.dataset.locked = String(Boolean(how));
    const label = document.querySelector(`label[for="${name}"]`) || field.closest("label");
    if (label) label.dataset.locked = String(Boolean(how));
    whoSetIt(field, name, how);
  }
  document.getElementById("managed-note").hidden = managedKeys.length === 0;
  form.dataset.loaded = "true";
}

function read(form) {
  const options = {};
  for (const name of FIELDS) {
    const field = form.elements[name];
    if (field.disabled) continue;
    if (field.type === "checkbox") options[name] = field.checked;
    else if (name === "schoolAliases") options[name] = field.value.split("\n").map((a) => a.trim()).filter(Boolean);
    else if (name === "snoozeMinutes") options[name] = Math.max(0, Math.min(1440, Math.trunc(Number(field.value) || 0)));
    else options[name] = field.value.trim();
  }
  return options;
}

translate();
const form = document.getElementById("options");
ext.runtime.sendMessage({ type: "config" })
  .then(({ config, managedKeys, locked }) => fill(form, config, managedKeys, locked))
  .catch((err) => console.warn("lesfocus: loading the settings failed:", err));
form.addEventListener("submit", (event) => {
  event.preventDefault();
  // Saving before the current settings were shown would overwrite them with the blank form.
  if (form.dataset.loaded !== "true") return;
  ext.storage.local.set({ options: read(form) })
    .then(() => { document.getElementById("status").textContent = ext.i18n.getMessage("optionsSaved"); })
    .catch((err) => console.warn("lesfocus: saving the settings failed:", err));
});
