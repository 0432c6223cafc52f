"""charlstm-serve under load: concurrent streaming clients against one client alone and the batch-1 runtime.

    python bench/serve.py [--clients 1,8,32,128] [--chars 300] [--soak 10000] [--threads N] [--client light|httpx]
                          [--long-prompt 4096]

Starts `charlstm-serve` on the default model (--max-batch 128) in its own process. For each
count of clients, that many clients each stream one completion of --chars characters at once
(mixed seeds and options: plain, top-p, top-k with a penalty, min-p), and the table gives the
aggregate characters per second, each client's, and the p50/p99 time to the first character and
between characters; ratios against one client alone and against the batch-1 runtime's
generate() (in this process) measured in the same run. Targets: 32 clients >= 4x one client's
aggregate, p99 time to the first character at 32 clients under 1 s.

The clients share the server's machine, so they are made light: all of them on one asyncio loop
in this process, each a plain HTTP/1.1 connection whose chunked server-sent events are decoded by
hand (`--client httpx` gives each its own thread and httpx instead, as an application would, at
about ten times the CPU per character: on two cores that CPU is taken from the server).

With 32 in --clients, one more round: 32 streams joined by a request with a --long-prompt
(4,096 characters, the server's default limit), which the server feeds off the batch's way: the
others' longest gap between two characters says how long it holds them up.

--soak N then sends N requests (a quarter streamed and dropped after a few characters, a tenth
bad) and prints the server's resident memory after each tenth of them: it should stay flat.
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from charlstm.runtime import Model, generate
from shared_corpus import ROOT

OPTIONS = [{}, {"top_p": 0.9}, {"top_k": 20, "repetition_penalty": 1.2}, {"min_p": 0.05}]


def start_server(port: int, threads: int | None) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "charlstm-serve"
    proc = subprocess.Popen([exe, "--port", str(port), "--max-batch", "128", "--max-queue", "1024",
                             *(["--threads", str(threads)] if threads else [])], stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health")
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("charlstm-serve did not start")


def one_client(url: str, i: int, chars: int) -> dict:
    """One streamed completion: when each piece came, from the request's start."""
    body = {"prompt": "\n", "max_tokens": chars, "seed": 1000 + i, "stream": True, **OPTIONS[i % len(OPTIONS)]}
    start, times, received = time.perf_counter(), [], 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and (text := json.loads(line[6:])["choices"][0]["text"]):
                times.append(time.perf_counter() - start)
                received += len(text)  # a chunk may carry more than one character (text held back by a stop string)
    return _timings(times, received)


def _timings(times: list[float], received: int) -> dict:
    """A stream's measurement from when each piece came (seconds from the request) and the characters received."""
    return {"first": times[0], "gaps": [b - a for a, b in zip(times, times[1:])], "total": times[-1], "n": received}


async def light_client(port: int, i: int, chars: int, prompt: str = "\n") -> dict:
    """one_client's measurement over a bare connection: the request written by hand, the chunked
    reply decoded as it comes, each event's JSON parsed for its text."""
    body = json.dumps({"prompt": prompt, "max_tokens": chars, "seed": 1000 + i, "stream": True, **OPTIONS[i % len(OPTIONS)]})
    start, times, received = time.perf_counter(), [], 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body.encode())}\r\nConnection: close\r\n\r\n{body}".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in head.lower():
        raise SystemExit(f"unexpected reply: {head[:200]!r}")
    pending = b""
    while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):  # one HTTP chunk: one or more events
        pending += (await reader.readexactly(size + 2))[:-2]
        *events, pending = pending.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: {") and (text := json.loads(event[6:])["choices"][0]["text"]):
                times.append(time.perf_counter() - start)
                received += len(text)
    writer.close()
    return _timings(times, received)


def load(port: int, clients: int, chars: int, client: str) -> dict:
    """One round of `clients` at once; "clients_cpu" is the clients' CPU time over the wall time (1 = a core)."""
    async def everyone():
        return await asyncio.gather(*(light_client(port, i, chars) for i in range(clients)))
    start, cpu = time.perf_counter(), time.process_time()
    if client == "httpx":
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            runs = list(pool.map(lambda i: one_client(f"http://127.0.0.1:{port}", i, chars), range(clients)))
    else:
        runs = asyncio.run(everyone())
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    gaps = sorted(g for r in runs for g in r["gaps"])
    firsts = sorted(r["first"] for r in runs)
    return {"clients": clients, "aggregate": sum(r["n"] for r in runs) / wall,
            "per_client": statistics.median(r["n"] / r["total"] for r in runs),
            "first_p50": _pct(firsts, 50), "first_p99": _pct(firsts, 99), "gap_p50": _pct(gaps, 50), "gap_p99": _pct(gaps, 99),
            "gap_max": gaps[-1], "clients_cpu": cpu / wall, "wall": wall}


def long_prompt_round(port: int, clients: int, chars: int, prompt_chars: int) -> dict:
    """`clients` streams, joined after a fifth of a second by a request with a prompt of
    `prompt_chars` characters: how long it waits for its first character, and the others'
    longest gap between two characters (against a round without it)."""
    prompt = ("Monsieur, je vous dis que cela ne se peut. " * prompt_chars)[:prompt_chars]

    async def late():
        await asyncio.sleep(0.2)
        return await light_client(port, clients, 20, prompt)

    async def everyone():
        return await asyncio.gather(*(light_client(port, i, chars) for i in range(clients)), late())
    *runs, long = asyncio.run(everyone())
    return {"first": long["first"], "gap_max": max(g for r in runs for g in r["gaps"])}


def _pct(values: list, p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, pid: int, count: int) -> list[tuple[int, float]]:
    marks = []
    with httpx.Client(timeout=60) as client:
        for i in range(count):
            if i % 10 == 3:
                client.post(f"{url}/v1/completions", json={"prompt": "a", "top_k": 0})  # bad: 400
            elif i % 4 == 1:
                with client.stream("POST", f"{url}/v1/completions",
                                   json={"prompt": "\n", "max_tokens": 500, "stream": True}) as r:
                    for _ in zip(range(3), r.iter_lines()):
                        pass  # then dropped
            else:
                client.post(f"{url}/v1/completions", json={"prompt": "\n", "max_tokens": 20, "seed": i})
            if (i + 1) % max(1, count // 10) == 0:
                marks.append((i + 1, rss_mb(pid)))
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32,128")
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--soak", type=int, default=0)
    parser.add_argument("--long-prompt", type=int, default=4096, help="characters of the prompt that joins 32 streams (0: none)")
    parser.add_argument("--threads", type=int, default=None, help="the server's onnxruntime threads [default: its own]")
    parser.add_argument("--client", choices=("light", "httpx"), default="light",
                        help="light: every client on one asyncio loop over bare HTTP/1.1; httpx: a thread and httpx each")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, args.threads)
    try:
        model = Model(ROOT / "models" / "moliere.onnx", prefill=None)
        t0 = time.perf_counter()
        generate(model, "\n", args.chars, seed=0)
        runtime = args.chars / (time.perf_counter() - t0)
        rows = []
        for clients in map(int, args.clients.split(",")):
            before = cpu_seconds(server.pid)
            rows.append(load(port, clients, args.chars, args.client))
            rows[-1]["server_cpu"] = (cpu_seconds(server.pid) - before) / rows[-1]["wall"]
        alone = next((r["aggregate"] for r in rows if r["clients"] == 1), rows[0]["aggregate"])
        print(f"default model, {args.chars} characters per client, streamed ({args.client} clients);"
              f" batch-1 runtime: {runtime:,.0f} chars/s\n")
        print(f"{'clients':>7} {'chars/s':>9} {'vs 1 client':>11} {'vs runtime':>10} {'per client':>10}"
              f" {'first p50':>9} {'first p99':>9} {'gap p50':>8} {'gap p99':>8} {'server cpu':>10} {'clients cpu':>11}")
        for r in rows:
            print(f"{r['clients']:>7} {r['aggregate']:>9,.0f} {r['aggregate'] / alone:>10.2f}x {r['aggregate'] / runtime:>9.2f}x"
                  f" {r['per_client']:>10,.0f} {r['first_p50']:>8.3f}s {r['first_p99']:>8.3f}s"
                  f" {1000 * r['gap_p50']:>6.1f}ms {1000 * r['gap_p99']:>6.1f}ms"
                  f" {100 * r['server_cpu']:>9.0f}% {100 * r['clients_cpu']:>10.0f}%")
        at32 = next((r for r in rows if r["clients"] == 32), None)
        if at32:
            print(f"\n32 clients >= 4x one: {'met' if at32['aggregate'] >= 4 * alone else 'NOT MET'}"
                  f" ({at32['aggregate'] / alone:.2f}x); p99 first character < 1 s:"
                  f" {'met' if at32['first_p99'] < 1 else 'NOT MET'} ({at32['first_p99']:.3f} s)")
        if at32 and args.long_prompt:
            joined = long_prompt_round(port, 32, args.chars, args.long_prompt)
            print(f"a {args.long_prompt:,}-character prompt joining 32 streams: its first character after"
                  f" {joined['first']:.3f} s; the 32's longest gap {1000 * joined['gap_max']:.1f} ms"
                  f" ({1000 * at32['gap_max']:.1f} ms without it)")
        if args.soak:
            marks = soak(url, server.pid, args.soak)
            print("\nrequests  server RSS (MB)")
            for done, mb in marks:
                print(f"{done:>8}  {mb:>8.1f}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
