// The browser side of bench/js_runtime.py: each line on stdin, "isolated MODEL" or "plain MODEL",
// opens the demo page afresh in headless Chromium (onnxruntime-web, WebAssembly; served with or
// without the cross-origin isolation headers that allow threads), generates CHARS characters
// after a line break (seed 0), and prints the page's figures as one line of JSON.

import readline from "node:readline";

import { chromium, openDemo, serveRepository } from "../test/helpers.mjs";

const chars = process.argv[2] ?? "2000";
const servers = { isolated: await serveRepository({ isolated: true }), plain: await serveRepository() };
const browser = await chromium();
for await (const line of readline.createInterface({ input: process.stdin })) {
  const [mode, model] = line.trim().split(" ");
  const page = await openDemo(browser, servers[mode].url, { model: `/${model}`, prompt: "\n", seed: 0, n: chars,
    temperature: 0.8, autostart: 1 });
  const figures = await page.evaluate(() => window.charlstm);
  await page.close();
  delete figures.text;
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}
await browser.close();
for (const { server } of Object.values(servers)) server.close();
