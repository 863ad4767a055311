/*
 * Local checks that choose which reminders apply to a draft. Pure functions, no browser APIs:
 * the draft never leaves this file's callers. Loaded as a classic content script (it sets
 * globalThis.LesfocusChecks) and, for the unit tests, as a CommonJS module under Node.
 */
(function (root) {
  "use strict";

  // A "word character" for whole-word matching: any letter or digit in any script, so that
  // "hoera" does not match "hoer" and "café" is one word.
  const NOT_WORD_BEFORE = "(?<![\\p{L}\\p{N}_])";
  const NOT_WORD_AFTER = "(?![\\p{L}\\p{N}_])";

  /** Dutch phone numbers: 0, +31 or 0031, then nine digits with the usual separators. */
  const PHONE_RE = /(?<![\d+])(?:\+31|0031|0)(?:[\s.\-]|\(0\))*\(?[1-9](?:[\s.\-()]*\d){8}(?![\d])/g;

  const EMAIL_RE = /(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])/g;

  // BSN written as 9 digits, or as 4.2.3 / 3.3.3 groups separated by dots or spaces.
  const BSN_RE = /(?<![\d.\-])(?:\d{9}|\d{4}[.\s]\d{2}[.\s]\d{3}|\d{3}[.\s]\d{3}[.\s]\d{3})(?![\d]|[.\-]\d)/g;

  // IBAN: country, check digits, then 11 to 30 alphanumerics, optionally in groups of four.
  const IBAN_RE = /(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])/g;

  // A Dutch postcode: 4 digits (not starting with 0), then two letters other than SA, SD and SS.
  const POSTCODE = "[1-9]\\d{3}(?:\\s?(?!SA|SD|SS)[A-Z]{2}|(?!sa|sd|ss)[a-z]{2})";
  const HOUSE_NUMBER = "\\d{1,5}(?:\\s?[a-zA-Z](?![\\p{L}]))?(?:[-\\s]?(?:hs|bis|\\d{1,3}))?";
  // "Dorpsstraat 12, 1234 AB" (a street word, a house number, then the postcode) or
  // "1234 AB 12" / "1234AB, nr. 12" (the postcode, then the house number).
  const ADDRESS_RE = new RegExp(
    "\\p{L}{3,}\\.?\\s+" + HOUSE_NUMBER + "\\s*,?\\s+" + POSTCODE + NOT_WORD_AFTER +
    "|" + NOT_WORD_BEFORE + POSTCODE + "\\s*,?\\s+(?:(?:nr|no|huisnummer)\\.?\\s*)?\\d{1,5}" + NOT_WORD_AFTER,
    "gu");

  /**
   * Insults and threats, Dutch and English. Whole words only; a few entries are phrases.
   * Kept short on purpose: the reminder asks a question, it does not accuse.
   */
  const INSULT_TERMS = [
    // Dutch
    "kanker", "kankerlijer", "kankerhoer", "kut", "kutwijf", "kutkind", "tering", "tyfus", "klootzak",
    "klootzakken", "idioot", "idioten", "debiel", "debielen", "mongool", "mongolen", "sukkel", "sukkels",
    "hoer", "hoeren", "slet", "sletten", "lul", "eikel", "eikels", "achterlijk", "achterlijke", "loser",
    "losers", "dikzak", "lelijkerd", "flikker", "mietje", "stomme trut", "trut", "kutjoch",
    "ik maak je af", "ik sla je", "ik weet waar je woont", "je gaat eraan", "ik pak je", "ga dood",
    "maak je dood", "steek je neer",
    // English
    "idiot", "idiots", "moron", "morons", "retard", "retarded", "stupid", "dumbass", "bitch", "bitches",
    "slut", "whore", "cunt", "fuck you", "fuck off", "shut up", "ugly", "fatso", "freak", "faggot",
    "kill you", "i will kill", "i'll kill", "i will hurt you", "i'll hurt you", "i know where you live",
    "you're dead", "kill yourself", "kys",
  ];

  /** Words about school matters: grades, tests, absence, lessons, the mentor. */
  const SCHOOL_MATTER_TERMS = [
    "cijfer", "cijfers", "toets", "toetsen", "proefwerk", "examen", "examens", "herkansing",
    "huiswerk", "rapport", "rapportcijfer", "overgang", "blijven zitten", "zittenblijven", "les", "lessen",
    "docent", "leraar", "lerares", "mentor", "mentoruur", "klas", "rooster", "verzuim", "absent", "spijbelen",
    "nablijven", "schorsing", "straf", "ouderavond", "cijferlijst", "beoordeling", "inhalen", "pta",
    "grade", "grades", "exam", "exams", "homework", "report card", "detention", "teacher",
    "lesson", "resit", "suspension", "parent evening",
  ];

  /** Words that address a student or a parent (for staff: a discussion about school matters). */
  const STUDENT_OR_PARENT_TERMS = [
    "je zoon", "uw zoon", "je dochter", "uw dochter", "uw kind", "je kind", "jullie kind", "ouder",
    "ouders", "leerling", "leerlingen", "mevrouw", "meneer", "mam", "pap", "jouw cijfer", "je cijfer",
    "your son", "your daughter", "your child", "parent", "parents", "student", "students", "pupil",
  ];

  /**
   * Words that place a person at school: next to a first name they make it a classmate's or a
   * teacher's name ("Sanne uit de klas", "meester Bram", "Daan van de brugklas").
   */
  const SCHOOL_WORDS = [
    "klas", "klasgenoot", "klasgenote", "klasgenoten", "brugklas", "mentor", "mentorklas",
    "school", "schoolplein", "kantine", "gymles", "gym", "les", "juf", "meester", "docent",
    "leraar", "lerares", "leerling", "toets", "pauze", "aula", "lokaal", "klassenapp",
    "class", "classmate", "teacher", "school",
  ];
  // A class code: "2b", "3havo-b", "4 vwo", "h3a", "klas 1c", "groep 8", "3A".
  const CLASS_CODE_RE = new RegExp(
    NOT_WORD_BEFORE + "(?:(?:groep|klas|class)\\s*[1-8][a-z]?|[1-6]\\s?(?:havo|vwo|vmbo|mavo|gym|tto|atheneum|kgt|bb|kb|tl)" +
    "(?:[-\\s]?[a-z]\\d?)?|[1-6][a-h]\\d?|[hvm][1-6][a-h]?\\d?)" + NOT_WORD_AFTER, "giu");
  // How far (in words) a class code or school word may be from the name.
  const NAME_CONTEXT_WORDS = 6;

  /** Escape text for use inside a RegExp. */
  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  /** Lower-case, strip accents and unify whitespace so "Café  Lucas" matches "cafe lucas". */
  function normalize(text) {
    return String(text || "")
      .normalize("NFKD")
      .replace(/\p{M}+/gu, "")
      .replace(/[\u2019\u2018`]/g, "'")
      .replace(/\s+/g, " ")
      .toLowerCase();
  }

  /**
   * Build one RegExp that finds any of the phrases as whole words in normalized text.
   * @param {string[]} phrases
   * @returns {RegExp|null}
   */
  function wholeWordMatcher(phrases) {
    const parts = phrases
      .map((p) => normalize(p).trim())
      .filter((p) => p.length > 0)
      .sort((a, b) => b.length - a.length)
      .map((p) => escapeRegExp(p).replace(/ /g, "\\s+"));
    if (parts.length === 0) return null;
    return new RegExp(NOT_WORD_BEFORE + "(?:" + parts.join("|") + ")" + NOT_WORD_AFTER, "gu");
  }

  const INSULT_RE = wholeWordMatcher(INSULT_TERMS);
  const SCHOOL_MATTER_RE = wholeWordMatcher(SCHOOL_MATTER_TERMS);
  const STUDENT_OR_PARENT_RE = wholeWordMatcher(STUDENT_OR_PARENT_TERMS);

  function allMatches(re, text) {
    re.lastIndex = 0;
    return Array.from(String(text).matchAll(re), (m) => m[0]);
  }

  /** True when the nine digits pass the BSN elfproef (9*d1 + 8*d2 + ... + 2*d8 - d9 = 0 mod 11). */
  function isValidBsn(candidate) {
    const digits = String(candidate).replace(/[.\s]/g, "");
    if (!/^\d{9}$/.test(digits) || /^0+$/.test(digits)) return false;
    let sum = 0;
    for (let i = 0; i < 8; i += 1) sum += (9 - i) * Number(digits[i]);
    sum -= Number(digits[8]);
    return sum % 11 === 0;
  }

  /** True when the IBAN's check digits are right (ISO 13616: mod 97 of the rearranged number is 1). */
  function isValidIban(candidate) {
    const iban = String(candidate).replace(/\s+/g, "").toUpperCase();
    if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(iban)) return false;
    if (iban.startsWith("NL") && iban.length !== 18) return false;
    const rearranged = iban.slice(4) + iban.slice(0, 4);
    let remainder = 0;
    for (const ch of rearranged) {
      const value = ch >= "A" ? String(ch.charCodeAt(0) - 55) : ch;
      for (const d of value) remainder = (remainder * 10 + Number(d)) % 97;
    }
    return remainder === 1;
  }

  /** The Dutch phone numbers in the text. */
  function findPhoneNumbers(text) {
    return allMatches(PHONE_RE, text).filter((m) => {
      const digits = m.replace(/\D/g, "");
      const national = digits.startsWith("0031") ? digits.slice(4)
        : digits.startsWith("31") && m.trim().startsWith("+") ? digits.slice(2)
          : digits.slice(1);
      // "(0)" after +31 is a common way of writing the trunk prefix: drop it.
      const n = national.length === 10 && national.startsWith("0") ? national.slice(1) : national;
      return n.length === 9 && n[0] !== "0";
    });
  }

  /** The e-mail addresses in the text. */
  function findEmails(text) {
    return allMatches(EMAIL_RE, text);
  }

  /** The numbers in the text that are valid BSNs. */
  function findBsns(text) {
    return allMatches(BSN_RE, text).filter(isValidBsn);
  }

  /** The valid IBANs in the text. */
  function findIbans(text) {
    const found = [];
    for (const match of allMatches(IBAN_RE, text)) {
      // Written in groups, the match may run into the next word ("... 1643 00 aub"): try the
      // longest run of groups that is a valid IBAN.
      const groups = match.trim().split(" ");
      for (let n = groups.length; n > 0; n -= 1) {
        const candidate = groups.slice(0, n).join(" ");
        if (isValidIban(candidate)) {
          found.push(candidate);
          break;
        }
      }
    }
    return found;
  }

  /** Postcodes written together with a house number. */
  function findAddresses(text) {
    return allMatches(ADDRESS_RE, text);
  }

  /** The insulting or threatening words and phrases in the text. */
  function findInsults(text) {
    return allMatches(INSULT_RE, normalize(text));
  }

  /**
   * Mentions of the school by its name or one of its aliases, as whole words.
   * @param {string} text
   * @param {string[]} names the school's name and aliases
   */
  function findSchoolMentions(text, names) {
    const re = wholeWordMatcher((names || []).filter((n) => typeof n === "string"));
    return re ? allMatches(re, normalize(text)) : [];
  }

  /**
   * A discussion with a student or parent about school matters: a school-matter word together
   * with a word addressing a student or parent, or a school-matter word in a reply or chat.
   */
  function looksLikeSchoolMatter(text, inConversation) {
    const norm = normalize(text);
    const matters = allMatches(SCHOOL_MATTER_RE, norm);
    if (matters.length === 0) return false;
    return Boolean(inConversation) || allMatches(STUDENT_OR_PARENT_RE, norm).length > 0;
  }

  const FIRST_NAMES = new Set(
    ((root.LesfocusFirstNames || (typeof require === "function" ? require("../data/first_names.js") : {})).names || [])
      .map((n) => normalize(n)));
  const SCHOOL_WORD_SET = new Set(SCHOOL_WORDS.map((w) => normalize(w)));

  /**
   * First names (from the bundled list, written with a capital) with a class code or a school
   * word at most NAME_CONTEXT_WORDS words away: "Sanne de Vries uit 2b", "juf Fleur".
   * @returns {{name: string, context: "class"|"school"}[]}
   */
  function findNamesAtSchool(text) {
    const words = Array.from(String(text).matchAll(/[\p{L}\p{N}][\p{L}\p{N}'-]*/gu), (m) => ({ word: m[0], at: m.index }));
    if (words.length === 0) return [];
    const classAt = new Set();
    CLASS_CODE_RE.lastIndex = 0;
    for (const m of String(text).matchAll(CLASS_CODE_RE)) {
      const index = words.findIndex((w) => w.at + w.word.length > m.index);
      if (index >= 0) classAt.add(index);
    }
    const found = [];
    words.forEach((w, index) => {
      if (!/^\p{Lu}/u.test(w.word) || !FIRST_NAMES.has(normalize(w.word))) return;
      let context = null;
      for (let j = Math.max(0, index - NAME_CONTEXT_WORDS); j <= Math.min(words.length - 1, index + NAME_CONTEXT_WORDS); j += 1) {
        if (j === index) continue;
        if (classAt.has(j)) { context = "class"; break; }
        if (SCHOOL_WORD_SET.has(normalize(words[j].word))) context = context || "school";
      }
      if (context) found.push({ name: w.word, context });
    });
    return found;
  }

  /**
   * A reminder's text without its own article cited at the end ("... (artikel A2)."): the
   * overlay shows the article once, as its label.
   */
  function withoutArticleCitation(text, article) {
    if (!article) return String(text || "");
    const re = new RegExp("\\s*\\((?:artikel|article)\\s+" + escapeRegExp(article) + "\\)(?=[.!?]?\\s*$)", "i");
    return String(text || "").replace(re, "");
  }

  /**
   * Analyse a draft. Returns the triggers that fire (SPEC §3 reminder triggers) and what fired them.
   * @param {{text: string, hasMedia?: boolean, inConversation?: boolean}} draft
   * @param {{audience?: string, schoolName?: string, schoolAliases?: string[]}} config
   * @returns {{triggers: string[], findings: Object<string, string[]>, kinds: Object<string, string[]>}}
   *   kinds: per trigger, what kind of thing was found (personal_data: phone, email, bsn, iban,
   *   address, name_class, name_school), for the reminder to say what it noticed
   */
  function analyzeDraft(draft, config) {
    const text = String((draft && draft.text) || "");
    const cfg = config || {};
    const kinds = { personal_data: [] };
    const personal = [];
    const add = (kind, values) => {
      if (values.length === 0) return;
      personal.push(...values);
      kinds.personal_data.push(kind);
    };
    add("phone", findPhoneNumbers(text));
    add("email", findEmails(text));
    add("bsn", findBsns(text));
    add("iban", findIbans(text));
    add("address", findAddresses(text));
    const names = findNamesAtSchool(text);
    add("name_class", names.filter((n) => n.context === "class").map((n) => n.name));
    add("name_school", names.filter((n) => n.context === "school").map((n) => n.name));
    const findings = {
      personal_data: personal,
      media: draft && draft.hasMedia ? ["media"] : [],
      school_mention: findSchoolMentions(text, [cfg.schoolName, ...(cfg.schoolAliases || [])]),
      insult: findInsults(text),
      school_matter: cfg.audience === "staff" && looksLikeSchoolMatter(text, draft && draft.inConversation)
        ? ["school_matter"] : [],
    };
    const triggers = Object.keys(findings).filter((k) => findings[k].length > 0);
    for (const trigger of triggers) if (!kinds[trigger]) kinds[trigger] = [trigger];
    return { triggers: ["always", ...triggers], findings, kinds };
  }

  /**
   * The reminders that apply to the triggers for this audience: finding-based ones first (in the
   * order of the reminder list), then the always-on ones.
   * @param {{article: string, audience: string, trigger: string, text: string}[]} reminders
   * @param {string[]} triggers
   * @param {string} audience "student" or "staff"
   */
  function selectReminders(reminders, triggers, audience) {
    const fits = (r) => (r.audience === "all" || r.audience === audience) && triggers.includes(r.trigger);
    const chosen = (reminders || []).filter(fits);
    return [...chosen.filter((r) => r.trigger !== "always"), ...chosen.filter((r) => r.trigger === "always")];
  }

  const api = {
    analyzeDraft, selectReminders, isValidBsn, isValidIban, findPhoneNumbers, findEmails, findBsns,
    findIbans, findAddresses, findInsults, findSchoolMentions, looksLikeSchoolMatter, normalize,
    findNamesAtSchool, withoutArticleCitation,
  };
  root.LesfocusChecks = api;
  if (typeof module !== "undefined" && module.exports) module.exports = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
