#!/usr/bin/env node
// Serve the repository for the demo page: node runtime/js/demo/serve.mjs [PORT] → open the URL it prints.
// Any static server works (python3 -m http.server, from the repository's root); this one also
// sends the cross-origin isolation headers, which let the page run onnxruntime-web on several threads.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const TYPES = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
  ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json",
  ".png": "image/png" };
// Cross-origin isolation: what lets a page use SharedArrayBuffer, so WebAssembly threads.
export const ISOLATION = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };

/** A static file server over the repository on 127.0.0.1; `isolated`: with the isolation headers. */
export async function serveRepository({ isolated = false, port = 0 } = {}) {
  const server = http.createServer((request, response) => {
    const file = path.join(ROOT, decodeURIComponent(new URL(request.url, "http://x").pathname));
    const target = file.endsWith("/") ? `${file}index.html` : file;
    if (!target.startsWith(ROOT) || !fs.existsSync(target) || fs.statSync(target).isDirectory()) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": TYPES[path.extname(target)] ?? "application/octet-stream",
      ...(isolated ? ISOLATION : {}) });
    fs.createReadStream(target).pipe(response);
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}/` };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const { url } = await serveRepository({ isolated: true, port: Number(process.argv[2] ?? 8000) });
  console.log(`the demo: ${url}runtime/js/demo/  (Ctrl-C stops the server)`);
}
