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

// A phone held upright, the narrowest phones, a desktop: the form wraps, nothing scrolls sideways,
// Generate is on screen and a tap on it prints the Python runtime's text.
const SCREENS = [["phone", { width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 2 }],
  ["small-phone", { width: 320, height: 640, isMobile: true, hasTouch: true }], ["desktop", { width: 1280, height: 800 }]];

for (const [name, viewport] of SCREENS) {
  test(`the page fits a ${name} screen (${viewport.width} × ${viewport.height}) and Generate works there`, async () => {
    const c = cases.find((x) => x.model === "moliere" && x.seed === "1");
    const q = query(c);
    q.delete("autostart");
    const page = await openDemo(browser, served.url, q, ["ready"], 180_000, viewport);
    const layout = await page.evaluate(() => {
      const box = document.getElementById("start").getBoundingClientRect();
      return { scroll: document.documentElement.scrollWidth, inner: window.innerWidth, box: box.toJSON(),
        loading: document.getElementById("loading").hidden, stats: document.getElementById("stats").textContent,
        icon: document.querySelector("link[rel=icon]")?.href ?? "" };
    });
    assert.ok(layout.scroll <= layout.inner, `${layout.scroll} px wide in a ${layout.inner} px window`);
    assert.ok(layout.box.left >= 0 && layout.box.right <= layout.inner && layout.box.height >= 40, JSON.stringify(layout.box));
    assert.ok(layout.loading, "the loading bar goes once the model is ready");
    assert.match(layout.stats, /onnxruntime-web [0-9.]+, WebAssembly \(1 thread/);
    assert.match(layout.icon, /^data:image\/svg\+xml/);
    await (viewport.hasTouch ? page.tap("#start") : page.click("#start"));
    await page.waitForFunction(() => ["done", "failed"].includes(document.body.dataset.state), { polling: 100 });
    assert.equal(await page.evaluate(() => window.charlstm.text), c.texts[0]);
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "the text wraps");
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}demo-${name}.png`, fullPage: true });
    await page.close();
  });
}

// The golden transcripts hold what charlstm-sample prints for beams and for logprobs on the tiny model.
const transcript = (flag) => golden("transcripts.json").find((t) => t.argv.includes(flag) && t.status === 0);

test("the page's beams are charlstm-sample --beams's", async () => {
  const t = transcript("--beams"); // tiny.onnx --prime a -n 12 --beams 3 --ban f
  const expected = [...t.stdout.matchAll(/--- beam \d+ \(log-probability (\S+)\) ---\n(.*)\n/g)];
  const value = (flag) => t.argv[t.argv.indexOf(flag) + 1];
  const page = await openDemo(browser, served.url, { model: MODEL_URLS.tiny, prompt: value("--prime"), n: value("-n"),
    beams: value("--beams"), ban: value("--ban"), autostart: 1 });
  const beams = await page.evaluate(() => window.charlstm.beams);
  assert.equal(beams.length, expected.length);
  beams.forEach((b, i) => {
    assert.equal(value("--prime") + b.text, expected[i][2]);
    assert.ok(Math.abs(b.logprob - Number(expected[i][1])) < 1e-4);
  });
  assert.equal(await page.$$eval("#beamList li", (items) => items.length), expected.length);
  await page.close();
});

test("the page's probabilities are charlstm-sample --logprobs's, and a tap shows the alternatives", async () => {
  const t = transcript("--logprobs"); // tiny.onnx --prime ab -n 5 --seed 1 --logprobs 2 --min-p 0.1
  const expected = t.stdout.trim().split("\n").map((line) => JSON.parse(line));
  const value = (flag) => t.argv[t.argv.indexOf(flag) + 1];
  const page = await openDemo(browser, served.url, { model: MODEL_URLS.tiny, prompt: value("--prime"), n: value("-n"),
    seed: value("--seed"), minP: value("--min-p"), probabilities: 1, autostart: 1 }, ["done"], 180_000,
  { width: 390, height: 844, isMobile: true, hasTouch: true });
  const records = await page.evaluate(() => window.charlstm.records);
  assert.deepEqual(records.map((r) => [r.char, r.id]), expected.map((r) => [r.char, r.id]));
  records.forEach((r, i) => {
    assert.ok(Math.abs(r.logprob - expected[i].logprob) < 1e-4);
    assert.deepEqual(r.top.slice(0, 2).map((a) => a.id), expected[i].top.map((a) => a.id));
  });
  await page.tap("#output .p");
  assert.match(await page.$eval("#detail", (el) => el.textContent), /^"c" \d+\.\d% · alternatives: "c" /);
  await page.close();
});
