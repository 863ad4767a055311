// Firefox smoke test of the extension, run by test_extension_firefox.py: Debian's firefox-esr, headless,
// driven over WebDriver BiDi by puppeteer-core. Loads the extension as a temporary add-on, opens
// the X fixture (every host name resolves to the loopback fake internet), and checks that a post
// is intercepted, that "Aanpassen" sends nothing and "Toch plaatsen" sends exactly once.
// Usage: node firefox_smoke.mjs EXTENSION_DIR PORT; prints one JSON line with what it saw.
import puppeteer from "puppeteer-core";

const [extensionDir, port] = process.argv.slice(2);
const result = { installed: null, overlay: false, articles: [], sentAfterEdit: null, sentAfterPost: null };
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: "/usr/bin/firefox-esr",
  headless: true,
  protocol: "webDriverBiDi",
  acceptInsecureCerts: true,
  extraPrefsFirefox: {
    // Every name resolves to loopback: the fixture server plays x.com.
    "network.dns.forceResolve": "127.0.0.1",
    "network.trr.mode": 5,
    "network.proxy.type": 0,
    "intl.locale.requested": "nl",
    "datareporting.policy.dataSubmissionEnabled": false,
    "toolkit.telemetry.enabled": false,
    "app.update.enabled": false,
    "browser.safebrowsing.malware.enabled": false,
    "browser.safebrowsing.phishing.enabled": false,
    "extensions.update.enabled": false,
    "extensions.getAddons.cache.enabled": false,
    "browser.newtabpage.enabled": false,
    "network.captive-portal-service.enabled": false,
    "network.connectivity-service.enabled": false,
  },
});
try {
  result.installed = await browser.installExtension(extensionDir);
  const page = await browser.newPage();
  const sent = () => page.evaluate(() => window.__sent.length);
  await page.goto(`https://x.com:${port}/`);
  const box = '#home-composer [data-testid="tweetTextarea_0"]';
  const button = '#home-composer [data-testid="tweetButtonInline"]';
  // Puppeteer's ">>>" shadow piercing did not find the overlay under BiDi in firefox-esr, so the
  // shadow root is read directly; clicks are real mouse clicks at the buttons' positions.
  const inOverlay = (selector) => page.evaluate((sel) => {
    const host = document.querySelector("lesfocus-reminder");
    return Boolean(host && host.shadowRoot && host.shadowRoot.querySelector(sel));
  }, selector);
  const waitForOverlay = () => page.waitForFunction(() => {
    const host = document.querySelector("lesfocus-reminder");
    return Boolean(host && host.shadowRoot && host.shadowRoot.querySelector('[role="dialog"]'));
  }, { timeout: 10000 });
  const clickInOverlay = async (selector) => {
    const at = await page.evaluate((sel) => {
      const r = document.querySelector("lesfocus-reminder").shadowRoot.querySelector(sel).getBoundingClientRect();
      return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
    }, selector);
    await page.mouse.click(at.x, at.y);
  };
  // Content scripts of a just-installed add-on may miss the first load: load the page again.
  await new Promise((r) => setTimeout(r, 500));
  await page.goto(`https://x.com:${port}/`);
  await page.click(box);
  await page.keyboard.type("bel me op 0612345678");
  await page.click(button);
  await waitForOverlay();
  result.overlay = await inOverlay('[role="dialog"][aria-modal="true"]');
  result.articles = await page.evaluate(() => Array.from(
    document.querySelector("lesfocus-reminder").shadowRoot.querySelectorAll("li"), (li) => li.dataset.article));
  await clickInOverlay('button[data-action="edit"]');
  result.sentAfterEdit = await sent();
  await page.click(button);
  await waitForOverlay();
  await clickInOverlay('button[data-action="post"]');
  await page.waitForFunction(() => window.__sent.length > 0, { timeout: 10000 });
  await new Promise((r) => setTimeout(r, 200));
  result.sentAfterPost = await sent();
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
