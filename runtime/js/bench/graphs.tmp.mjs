import fs from "node:fs";
const [which, threads] = [process.argv[2], Number(process.argv[3] ?? 1)];
const ort = await import(which === "web" ? "onnxruntime-web" : "onnxruntime-node");
if (which === "web") { ort.env.wasm.numThreads = threads; ort.env.wasm.simd = true; }
const files = { lstm: "/work/main/models/moliere.onnx", lstm8: "/tmp/web/moliere.onnx", w8: "/tmp/web/w8.onnx", };
const sessions = {};
for (const [k, f] of Object.entries(files)) sessions[k] = await ort.InferenceSession.create(fs.readFileSync(f), { ...(which === "web" ? { executionProviders: ["wasm"] } : { intraOpNumThreads: threads }), extra: { session: { disable_quant_qdq: process.env.NOFOLD ? "0" : "1" } } });
const times = Object.fromEntries(Object.keys(files).map((k) => [k, []]));
for (let round = 0; round < 5; round++) {
  for (const [k, s] of Object.entries(sessions)) {
    let h = new ort.Tensor("float32", new Float32Array(3 * 512), [3, 1, 512]), c = new ort.Tensor("float32", new Float32Array(3 * 512), [3, 1, 512]);
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) {
      const out = await s.run({ tokens: new ort.Tensor("int64", BigInt64Array.from([5n]), [1]), h_in: h, c_in: c });
      h = out.h_out; c = out.c_out;
    }
    times[k].push((performance.now() - t0) / 200 * 1000);
  }
}
const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(which, threads, Object.entries(times).map(([k, v]) => `${k} ${med(v).toFixed(0)}us`).join("  "));
