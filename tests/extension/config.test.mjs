// Unit tests for extension/background/config.js under `node --test`: which options a user may set
// and who set each locked one. storage.local and storage.managed are stood in for by a plain
// object (the real browser path is tests/extension/test_extension_managed_policy.py).
import test from "node:test";
import assert from "node:assert/strict";

const store = { managed: {}, local: {} };
globalThis.chrome = {
  storage: {
    managed: { get: async () => structuredClone(store.managed) },
    local: { get: async (key) => ({ [key]: structuredClone(store.local[key]) }) },
  },
};
const { loadConfig } = await import("../../extension/background/config.js");

async function load(managed, options) {
  store.managed = managed;
  store.local = { options };
  return loadConfig();
}

const STUDENT_TRIES = { audience: "staff", snoozeMinutes: 1440, onlyOnFindings: true, schoolName: "Vondel" };

test("without a policy a student cannot become staff, pause or mute the reminders", async () => {
  const { config, locked } = await load({}, STUDENT_TRIES);
  assert.equal(config.audience, "student");
  assert.equal(config.snoozeMinutes, 0);
  assert.equal(config.onlyOnFindings, false);
  assert.equal(config.schoolName, "Vondel"); // not a weakening choice: the user's own
  assert.deepEqual(locked, { audience: "default", snoozeMinutes: "default", onlyOnFindings: "default" });
});

test("the policy's userMayChange opens exactly the choices it lists", async () => {
  const { config, locked } = await load({ userMayChange: ["snoozeMinutes"] }, STUDENT_TRIES);
  assert.equal(config.snoozeMinutes, 1440);
  assert.equal(config.audience, "student");
  assert.equal(config.onlyOnFindings, false);
  assert.deepEqual(locked, { userMayChange: "policy", audience: "default", onlyOnFindings: "default" });
});

test("a value the policy sets wins and is locked by the policy, even when listed", async () => {
  const { config, locked } = await load({ audience: "staff", userMayChange: ["audience"] },
    { audience: "student" });
  assert.equal(config.audience, "staff");
  assert.equal(locked.audience, "policy");
});

test("userMayChange in the options is ignored, and unknown entries make the policy's invalid", async () => {
  const fromOptions = await load({}, { ...STUDENT_TRIES, userMayChange: ["audience"] });
  assert.equal(fromOptions.config.audience, "student");
  const bad = await load({ userMayChange: ["serverUrl"] }, STUDENT_TRIES);
  assert.equal(bad.config.audience, "student");
  assert.deepEqual(bad.config.userMayChange, []);
});
