// Unit tests for extension/content/checks.js, run with `node --test` (tests/extension/test_extension_checks.py
// runs this file from pytest so that `make test` covers it).
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const checks = require(path.join(__dirname, "..", "..", "extension", "content", "checks.js"));

/** Run one table: each row [text, expected boolean]. */
function table(name, finder, rows) {
  for (const [text, expected] of rows) {
    test(`${name}: ${JSON.stringify(text)} -> ${expected}`, () => {
      assert.equal(finder(text).length > 0, expected, `found: ${JSON.stringify(finder(text))}`);
    });
  }
}

table("phone", checks.findPhoneNumbers, [
  ["bel me op 0612345678", true],
  ["bel 06-12345678 na vieren", true],
  ["06 1234 5678", true],
  ["+31 6 12345678", true],
  ["+31612345678", true],
  ["0031 6 1234 5678", true],
  ["020-1234567", true],
  ["(020) 123 45 67", true],
  ["+31 (0)20 123 4567", true],
  ["010.123.45.67", true],
  ["06-1234567", false],            // one digit short
  ["061234567890", false],          // too long
  ["1234567890", false],            // no trunk prefix
  ["score 2019-2020 was 3-0", false],
  ["ordernummer 123456782", false], // a BSN, not a phone number
  ["00612345678", false],           // 0 followed by 0
]);

table("e-mail", checks.findEmails, [
  ["mail naar jan.jansen@example.nl", true],
  ["JAN+school@sub.example.co.uk?", true],
  ["volg @jansen op insta", false],
  ["naam at example dot nl", false],
  ["a@b", false],
  ["email@localhost", false],
]);

test("bsn elfproef", () => {
  for (const valid of ["123456782", "111222333", "999999990"]) assert.equal(checks.isValidBsn(valid), true, valid);
  for (const invalid of ["123456789", "000000000", "12345678", "1234567890", "111222334"]) {
    assert.equal(checks.isValidBsn(invalid), false, invalid);
  }
});

table("bsn in text", checks.findBsns, [
  ["mijn bsn is 123456782", true],
  ["BSN: 1234.56.782", true],
  ["bsn 123 456 782", true],
  ["mijn bsn is 123456789", false],  // fails the elfproef
  ["1234567820", false],             // ten digits
  ["tel 0612345678", false],
]);

test("iban mod-97", () => {
  for (const valid of ["NL91ABNA0417164300", "nl91 abna 0417 1643 00", "GB82WEST12345698765432",
    "DE89370400440532013000", "BE68539007547034"]) {
    assert.equal(checks.isValidIban(valid), true, valid);
  }
  for (const invalid of ["NL91ABNA0417164301", "NL92ABNA0417164300", "NL91ABNA041716430", "XX00", ""]) {
    assert.equal(checks.isValidIban(invalid), false, invalid);
  }
});

table("iban in text", checks.findIbans, [
  ["maak het over naar NL91 ABNA 0417 1643 00 aub", true],
  ["rekening NL91ABNA0417164300.", true],
  ["rekening NL91ABNA0417164301", false],
  ["NL91 is een code", false],
]);

table("postcode with house number", checks.findAddresses, [
  ["ik woon op Dorpsstraat 12, 1234 AB Utrecht", true],
  ["Kerkweg 7a 3511 CD", true],
  ["1234AB 12", true],
  ["postcode 1234 AB, nr. 5", true],
  ["1234ab 99", true],
  ["alleen 1234 AB zonder huisnummer", false],
  ["in 2019 en 12 anderen", false],   // lower-case letters with a space are not a postcode
  ["1234 SS 12", false],              // SS is never used
  ["0123 AB 12", false],              // postcodes do not start with 0
  ["we liepen 3000 km", false],
]);

table("insults and threats", checks.findInsults, [
  ["wat ben jij een idioot", true],
  ["Kanker op", true],
  ["IK MAAK JE AF", true],
  ["ik   weet waar je woont", true],
  ["you are so stupid", true],
  ["I'll kill you", true],
  ["Hoera, vakantie!", false],       // "hoer" inside a word
  ["Scunthorpe United won", false],  // "cunt" inside a word
  ["de idiote hond", false],         // "idiot" inside a word
  ["lullig gedaan", false],          // "lul" inside a word
  ["studiebeurs en kuttel", false],
  ["mooie foto!", false],
]);

test("school mentions match the name and aliases as whole words, ignoring case and accents", () => {
  const names = ["Lucas College", "LC", "Het Lúcas"];
  assert.equal(checks.findSchoolMentions("Vandaag op het Lucas College!", names).length, 1);
  assert.equal(checks.findSchoolMentions("groeten van LC", names).length, 1);
  assert.equal(checks.findSchoolMentions("het lucas was leuk", names).length, 1);
  assert.equal(checks.findSchoolMentions("LCD-scherm kapot", names).length, 0);
  assert.equal(checks.findSchoolMentions("Lucas Collegezaal", names).length, 0);
  assert.equal(checks.findSchoolMentions("iets", []).length, 0);
  assert.equal(checks.findSchoolMentions("iets", [""]).length, 0);
});

test("school matter for staff needs a school word and a student/parent or a conversation", () => {
  assert.equal(checks.looksLikeSchoolMatter("Uw zoon heeft een onvoldoende voor de toets", false), true);
  assert.equal(checks.looksLikeSchoolMatter("dat cijfer klopt wel", true), true);
  assert.equal(checks.looksLikeSchoolMatter("dat cijfer klopt wel", false), false);
  assert.equal(checks.looksLikeSchoolMatter("mooi weer vandaag, ouders", true), false);
});

test("analyzeDraft chooses triggers", () => {
  const cfg = { audience: "student", schoolName: "Testcollege", schoolAliases: ["TC"] };
  const r = checks.analyzeDraft({ text: "bel 0612345678, groet van TC, idioot", hasMedia: true }, cfg);
  assert.deepEqual(r.triggers.sort(), ["always", "insult", "media", "personal_data", "school_mention"]);
  const plain = checks.analyzeDraft({ text: "mooi weer" }, cfg);
  assert.deepEqual(plain.triggers, ["always"]);
  const staff = checks.analyzeDraft({ text: "Uw dochter moet de toets inhalen" }, { audience: "staff" });
  assert.ok(staff.triggers.includes("school_matter"));
  const student = checks.analyzeDraft({ text: "Uw dochter moet de toets inhalen" }, { audience: "student" });
  assert.ok(!student.triggers.includes("school_matter"));
});

test("selectReminders filters by audience and trigger, findings first", () => {
  const reminders = [
    { article: "A2", audience: "all", trigger: "always", text: "a2" },
    { article: "A1", audience: "student", trigger: "school_mention", text: "a1" },
    { article: "B1", audience: "staff", trigger: "school_mention", text: "b1" },
    { article: "A7", audience: "all", trigger: "insult", text: "a7" },
  ];
  const student = checks.selectReminders(reminders, ["always", "school_mention"], "student");
  assert.deepEqual(student.map((r) => r.article), ["A1", "A2"]);
  const staff = checks.selectReminders(reminders, ["always", "school_mention", "insult"], "staff");
  assert.deepEqual(staff.map((r) => r.article), ["B1", "A7", "A2"]);
});

table("names at school", (t) => checks.findNamesAtSchool(t), [
  ["Sanne de Vries uit 2b is echt irritant", true],
  ["Heb je Daan gezien in de kantine?", true],
  ["Ik zat met Emma in 3havo-b", true],
  ["Lucas zit in klas 1c", true],
  ["juf Fleur was ziek vandaag", true],
  ["Noah from class 4vwo", true],
  ["Fleur is mooi vandaag", false], // a name alone
  ["roos en fleur in de tuin", false], // not written as names
  ["mijn klas is leuk", false], // school words without a name
  ["Mark my words", false],
]);

test("names at school say whether a class or a school word was next to them", () => {
  assert.deepEqual(checks.findNamesAtSchool("Sanne uit 2b zei dat ze morgen niet kan, en juf Fleur ook niet"),
    [{ name: "Sanne", context: "class" }, { name: "Fleur", context: "school" }]);
});

test("analyzeDraft says what kind of personal data it found, not only that it found some", () => {
  const r = checks.analyzeDraft({ text: "Sanne de Vries uit 2b, bel haar op 0612345678" }, {});
  assert.deepEqual(r.kinds.personal_data, ["phone", "name_class"]);
  assert.ok(r.triggers.includes("personal_data"));
  assert.deepEqual(checks.analyzeDraft({ text: "wat een idioot" }, {}).kinds.insult, ["insult"]);
  assert.deepEqual(checks.analyzeDraft({ text: "hallo" }, {}).kinds, { personal_data: [] });
});

test("withoutArticleCitation drops only the reminder's own article at the end", () => {
  assert.equal(checks.withoutArticleCitation("Je bent zelf verantwoordelijk (artikel A2).", "A2"),
    "Je bent zelf verantwoordelijk.");
  assert.equal(checks.withoutArticleCitation("You are responsible (article A2)", "A2"), "You are responsible");
  assert.equal(checks.withoutArticleCitation("Zie artikel A2 (artikel A2) en meer.", "A2"),
    "Zie artikel A2 (artikel A2) en meer.");
  assert.equal(checks.withoutArticleCitation("Tekst (artikel A1).", "A2"), "Tekst (artikel A1).");
});
