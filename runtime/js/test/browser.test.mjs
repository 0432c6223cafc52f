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

// Every texts.json case of one sample: the shipped model and the tiny one trained by make_golden.py,
// greedy and seeded, with and without top-k, top-p, the repetition penalty and stop strings.
const cases = golden("texts.json").filter((c) => c.samples === 1);
const MODEL_URLS = { moliere: "/models/moliere.onnx", tiny: "/tests/golden/tiny.onnx" };

function query(c) {
  const o = c.options;
  const q = new URLSearchParams({ model: MODEL_URLS[c.model], prompt: c.prompt, seed: c.seed ?? "0", n: c.length,
    temperature: o.greedy ? 0 : o.temperature ?? 0.8, autostart: 1 });
  for (const [name, key] of [["topK", "top_k"], ["topP", "top_p"], ["penalty", "repetition_penalty"], ["minP", "min_p"],
    ["ban", "ban"], ["regex", "regex"]]) {
    if (o[key] !== undefined) q.set(name, o[key]);
  }
  for (const [ch, value] of Object.entries(o.logit_bias ?? {})) q.append("bias", `${ch}=${value}`);
  for (const stop of c.stop) q.append("stop", stop);
  return q;
}

test("the page prints the Python runtime's text for the same seed, on one thread or two", async () => {
  assert.ok(cases.length >= 10 && cases.some((c) => c.model === "tiny") && cases.some((c) => c.stop.length));
  const moliere = cases.filter((c) => c.model === "moliere");
  for (const [c, server, threads] of [...cases.map((c) => [c, served, 1]), [moliere[1], isolated, 2]]) {
    const page = await openDemo(browser, server.url, query(c));
    assert.equal(await page.evaluate(() => window.charlstm.threads), threads);
    const result = await page.evaluate(() => window.charlstm);
    assert.equal(result.text, c.texts[0], `seed ${c.seed}, prompt ${JSON.stringify(c.prompt)}`);
    assert.ok(result.charsPerSecond > 0 && result.firstCharMs > 0);
    const shown = await page.$eval("#output", (el) => el.textContent);
    assert.equal(shown, c.prompt + c.texts[0]);
    if (c.model === "moliere" && c.seed === "1") {
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
