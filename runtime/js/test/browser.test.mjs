// The demo page in a real headless Chromium: the shipped model streams the Python runtime's text for a seed.

import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, test } from "node:test";

import { chromium, golden, openDemo, ROOT, serveRepository } from "./helpers.mjs";

const ARTIFACTS = `${ROOT}runtime/js/test-artifacts/`;
let browser;
let served;
let isolated;

before(async () => {
  served = await serveRepository();
  isolated = await serveRepository({ isolated: true });
  browser = await chromium();
});

after(async () => {
  await browser?.close();
  served?.server.close();
  isolated?.server.close();
});

// The texts.json cases the page can express: prompt, temperature, seed, length, nothing else.
const cases = golden("texts.json").filter((c) => c.model === "moliere" && c.samples === 1 && c.stop.length === 0
  && Object.keys(c.options).every((k) => k === "temperature" || k === "greedy"));

test("the page prints the Python runtime's text for the same seed, on one thread or two", async () => {
  assert.ok(cases.length >= 3);
  for (const [c, server, threads] of [...cases.map((c) => [c, served, 1]), [cases[1], isolated, 2]]) {
    const temperature = c.options.greedy ? 0 : c.options.temperature ?? 0.8;
    const page = await openDemo(browser, server.url, { prompt: c.prompt, temperature, seed: c.seed ?? "0",
      n: c.length, autostart: 1 });
    assert.equal(await page.evaluate(() => window.charlstm.threads), threads);
    const result = await page.evaluate(() => window.charlstm);
    assert.equal(result.text, c.texts[0], `seed ${c.seed}, prompt ${JSON.stringify(c.prompt)}`);
    assert.ok(result.charsPerSecond > 0 && result.firstCharMs > 0);
    const shown = await page.$eval("#output", (el) => el.textContent);
    assert.equal(shown, c.prompt + c.texts[0]);
    if (c.seed === "1") {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: `${ARTIFACTS}demo.png`, fullPage: true });
    }
    await page.close();
  }
});

test("the stop button stops a long generation", async () => {
  const page = await openDemo(browser, served.url, { prompt: "ALCESTE.", seed: 3, n: 1_000_000, autostart: 1 },
    ["generating"]);
  await page.waitForFunction(() => window.charlstm.text.length > 50, { polling: 50 });
  await page.click("#stop");
  await page.waitForFunction(() => document.body.dataset.state === "stopped", { polling: 50 });
  const length = await page.evaluate(() => window.charlstm.text.length);
  assert.ok(length > 50 && length < 1_000_000);
  assert.equal(await page.$eval("#start", (b) => b.disabled), false);
  await page.close();
});
