#!/usr/bin/env node
// Serve the repository for the demo page: node runtime/js/demo/serve.mjs [PORT] [--host HOST] → open the URL it prints.
// Any static server works (python3 -m http.server, from the repository's root); this one also
// sends the cross-origin isolation headers, which let the page run onnxruntime-web on several threads.
// It serves regular files under the repository only: never a dot-file or anything in a dot-folder
// (.git), never a folder listing, a link out of the repository, a pipe or a device; it answers
// requests for another host name with 403 (a page elsewhere reaching it by DNS rebinding), and
// every request gets an answer.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fs.realpathSync(fileURLToPath(new URL("../../../", import.meta.url)));
const TYPES = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
  ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json",
  ".png": "image/png", ".css": "text/css", ".svg": "image/svg+xml" };
// Cross-origin isolation: what lets a page use SharedArrayBuffer, so WebAssembly threads.
export const ISOLATION = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const LOCAL_NAMES = ["127.0.0.1", "localhost", "[::1]"];

/** The file a request path names under ROOT, or the status that answers it instead. */
function resolve(pathname) {
  let relative;
  try {
    relative = decodeURIComponent(pathname);
  } catch {
    return { status: 400 }; // malformed percent-encoding
  }
  const parts = relative.split("/").filter((part) => part !== "");
  if (relative.includes("\0") || parts.some((part) => part.startsWith("."))) return { status: 404 };
  let file = path.join(ROOT, ...parts);
  try {
    if (pathname.endsWith("/")) file = path.join(file, "index.html");
    const real = fs.realpathSync(file);
    if (real !== ROOT && !real.startsWith(ROOT + path.sep)) return { status: 403 };
    const info = fs.statSync(real);
    return info.isFile() ? { file: real, size: info.size } : { status: 404 };
  } catch (e) {
    return { status: e.code === "EACCES" ? 403 : 404 };
  }
}

function answer(response, status, headers = {}) {
  response.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
  response.end(`${status} ${http.STATUS_CODES[status]}\n`);
}

/** A static file server over the repository, on 127.0.0.1 unless `host` says otherwise;
 * `isolated`: with the isolation headers. */
export async function serveRepository({ isolated = false, port = 0, host = "127.0.0.1" } = {}) {
  const server = http.createServer((request, response) => {
    const bound = server.address().port;
    const allowed = [...LOCAL_NAMES, host.includes(":") ? `[${host}]` : host].map((name) => `${name}:${bound}`);
    if (!allowed.includes(String(request.headers.host ?? "").toLowerCase())) return answer(response, 403);
    if (request.method !== "GET" && request.method !== "HEAD") return answer(response, 405, { allow: "GET, HEAD" });
    let pathname;
    try {
      pathname = new URL(request.url, "http://x").pathname;
    } catch {
      return answer(response, 400);
    }
    const found = resolve(pathname);
    if (found.status) return answer(response, found.status);
    fs.open(found.file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, (error, fd) => {
      if (error) return answer(response, error.code === "EACCES" ? 403 : 404);
      response.writeHead(200, { "content-type": TYPES[path.extname(found.file)] ?? "application/octet-stream",
        "content-length": found.size, ...(isolated ? ISOLATION : {}) });
      if (request.method === "HEAD") {
        fs.close(fd, () => {});
        return response.end();
      }
      const stream = fs.createReadStream(null, { fd });
      stream.on("error", () => response.destroy());
      stream.pipe(response);
    });
  });
  server.on("clientError", (error, socket) => socket.destroy());
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  return { server, url: `http://${host.includes(":") ? `[${host}]` : host}:${server.address().port}/` };
}

/** [PORT] [--host HOST] from the command line; a wrong one is one line and exit 2. */
function parseArgs(argv) {
  const options = { port: 8000, host: "127.0.0.1" };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--host" && i + 1 < argv.length) options.host = argv[++i];
    else if (/^[0-9]{1,5}$/.test(argv[i]) && Number(argv[i]) <= 65535) options.port = Number(argv[i]);
    else throw new Error(`'${argv[i]}' is neither a port (0 to 65535) nor --host HOST; usage: serve.mjs [PORT] [--host HOST]`);
  }
  return options;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  try {
    const { url } = await serveRepository({ isolated: true, ...parseArgs(process.argv.slice(2)) });
    console.log(`the demo: ${url}runtime/js/demo/  (Ctrl-C stops the server)`);
  } catch (e) {
    process.stderr.write(`serve.mjs: error: ${String(e.message ?? e).split("\n")[0]}\n`);
    process.exit(2);
  }
}
