// The demo server answers every request, serves regular files of the repository only, and
// refuses requests for another host (DNS rebinding).

import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import test from "node:test";
import { fileURLToPath } from "node:url";

import { serveRepository } from "../demo/serve.mjs";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

function get(port, pathname, { method = "GET", host = `127.0.0.1:${port}` } = {}) {
  return new Promise((resolve, reject) => {
    const request = http.request({ port, host: "127.0.0.1", path: pathname, method, headers: { host } }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode));
    });
    request.on("error", reject);
    request.end();
  });
}

test("every request is answered and only the repository's regular files are served", async () => {
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), "serve-"));
  fs.writeFileSync(path.join(outside, "secret.txt"), "secret");
  const link = path.join(ROOT, "runtime", "js", `serve-test-${process.pid}-link`);
  fs.symlinkSync(outside, link);
  const { server } = await serveRepository();
  const { port } = server.address();
  try {
    const cases = [["/runtime/js/demo/", 200], ["/%", 400], ["/%E0%A4%A", 400], ["/.git/config", 404],
      ["/runtime/../.git/HEAD", 404], ["/..%2f..%2fetc%2fpasswd", 404], ["/runtime/js/", 404],
      [`/runtime/js/serve-test-${process.pid}-link/secret.txt`, 403], ["/nothing-here", 404]];
    for (const [pathname, status] of cases) assert.equal(await get(port, pathname), status, pathname);
    assert.equal(await get(port, "/runtime/js/demo/", { host: `evil.example:${port}` }), 403);
    assert.equal(await get(port, "/runtime/js/demo/", { method: "POST" }), 405);
    assert.equal(await get(port, "/runtime/js/demo/", { host: `localhost:${port}` }), 200);
    assert.equal(server.address().address, "127.0.0.1");
    assert.equal(await get(port, "/runtime/js/demo/"), 200, "still up");
  } finally {
    server.close();
    fs.rmSync(link);
    fs.rmSync(outside, { recursive: true });
  }
});
