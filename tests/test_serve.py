"""charlstm-serve over real HTTP: the official openai client, concurrent clients against the runtime's text, bad requests."""

import concurrent.futures
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
import uvicorn  # noqa: E402

from charlstm.runtime import Model, beam_search, generate, generate_batch, score, stream_logprobs  # noqa: E402
from charlstm.serve.api import Limits, create_app  # noqa: E402
from conftest import ROOT  # noqa: E402

TINY = ROOT / "tests" / "golden" / "tiny.onnx"
SHIPPED = ROOT / "models" / "moliere.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The app on a real uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, path, **limits):
        self.model = Model(path, threads=1)
        self.port = free_port()
        config = uvicorn.Config(create_app(self.model, path.stem, Limits(**limits)), host="127.0.0.1", port=self.port,
                                log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=limits.get("api_key") or "none", max_retries=0)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def tiny():
    served = Served(TINY, max_lanes=16, max_prompt=100, max_body=10_000)
    yield served
    served.close()


def test_the_openai_client_gets_the_runtimes_text(tiny):
    done = tiny.client.completions.create(model="tiny", prompt="abc", max_tokens=60, seed=7, temperature=1.1)
    assert done.choices[0].text == generate(tiny.model, "abc", 60, seed=7, temperature=1.1)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 60
    pieces = list(tiny.client.completions.create(model="tiny", prompt="abc", max_tokens=60, seed=7, temperature=1.1,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(p.choices[0].text for p in pieces if p.choices) == done.choices[0].text
    assert pieces[-2].choices[0].finish_reason == "length"
    assert pieces[-1].choices == [] and pieces[-1].usage.completion_tokens == 60


def test_options_n_prompts_stop_echo_and_the_seed_header(tiny):
    body = {"prompt": ["ab", "fed"], "n": 2, "max_tokens": 50, "seed": 11, "top_k": 3, "min_p": 0.05,
            "logit_bias": {"a": 1.5}, "ban": "f", "stop": ["ee"], "repetition_penalty": 1.2, "echo": True}
    reply = httpx.post(f"{tiny.url}/v1/completions", json=body)
    assert reply.status_code == 200, reply.text
    options = {"top_k": 3, "min_p": 0.05, "logit_bias": {"a": 1.5}, "ban": "f", "repetition_penalty": 1.2}
    expected = [p + t for k, p in enumerate(["ab", "fed"])
                for t in generate_batch(tiny.model, p, 50, 2, seed=11 + 2 * k, stop=["ee"], **options)]
    assert [c["text"] for c in reply.json()["choices"]] == expected
    assert reply.headers["x-charlstm-seed"] == "11"
    drawn = httpx.post(f"{tiny.url}/v1/completions", json={"prompt": "a", "max_tokens": 5}).json()
    assert drawn["choices"][0]["text"] == generate(tiny.model, "a", 5, seed=drawn["seed"])


def test_regex_logprobs_beams_and_score(tiny):
    for pattern, reason in (("(abc|def)+", "length"), ("ab(c|dd)e", "stop")):  # it can go on; it has ended
        regex = httpx.post(f"{tiny.url}/v1/completions", json={"prompt": "c", "max_tokens": 30, "seed": 2,
                                                              "regex": pattern}).json()
        assert regex["choices"][0]["text"] == generate(tiny.model, "c", 30, seed=2, regex=pattern)
        assert regex["choices"][0]["finish_reason"] == reason
    lp = tiny.client.completions.create(model="tiny", prompt="ab", max_tokens=12, seed=1, logprobs=2)
    records = list(stream_logprobs(tiny.model, "ab", 12, 2, seed=1))
    assert lp.choices[0].logprobs.tokens == [r.char for r in records]
    assert lp.choices[0].logprobs.token_logprobs == [r.logprob for r in records]
    assert lp.choices[0].logprobs.top_logprobs[3] == {c: v for c, _, v in records[3].top}
    beams = httpx.post(f"{tiny.url}/v1/completions", json={"prompt": "a", "max_tokens": 12, "beams": 3,
                                                          "ban": "f"}).json()
    assert [(c["text"], c["logprob"]) for c in beams["choices"]] == [
        (b.text, b.logprob) for b in beam_search(tiny.model, "a", 12, 3, ban="f")]
    scored = httpx.post(f"{tiny.url}/v1/score", json={"text": "abcdefabcdef"}).json()
    assert scored["nats_per_char"] == score(tiny.model, "abcdefabcdef").nats_per_char
    assert tiny.client.models.list().data[0].id == "tiny"


def test_many_concurrent_clients_each_get_their_own_text(tiny):
    """32 clients at once, each with its own seed and options: the batch never changes a text."""
    def one(i):
        options = [{}, {"top_p": 0.9}, {"top_k": 2, "temperature": 1.3}, {"repetition_penalty": 1.4}][i % 4]
        body = {"prompt": "abcdef"[: i % 6], "max_tokens": 40 + i, "seed": 1000 + i, **options}
        got = httpx.post(f"{tiny.url}/v1/completions", json={**body, "stream": i % 2 == 0}, timeout=60)
        text = (json.loads(got.text)["choices"][0]["text"] if i % 2 else
                "".join(json.loads(line[6:])["choices"][0]["text"] for line in got.text.splitlines()
                        if line.startswith("data: {")))
        return text == generate(tiny.model, body["prompt"], body["max_tokens"], seed=body["seed"], **options)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        assert all(pool.map(one, range(32)))


def test_each_streamed_chunk_is_the_json_of_openais_object(tiny):
    """The chunks are formatted from a template (a stream sends one per character): each line is
    byte for byte json.dumps of the object it parses to, logprobs and finish reasons included."""
    body = {"prompt": "ab", "max_tokens": 30, "seed": 4, "stream": True, "logprobs": 2, "stop": ["fa"], "n": 2}
    lines = [line for line in httpx.post(f"{tiny.url}/v1/completions", json=body).text.split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    for line, chunk in zip(lines, chunks):
        assert line == f"data: {json.dumps(chunk, ensure_ascii=False)}", line
    whole = tiny.client.completions.create(model="tiny", prompt="ab", max_tokens=30, seed=4, n=2, stop=["fa"])
    for choice in whole.choices:
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == choice.index]
        assert "".join(c["text"] for c in mine) == choice.text
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == [choice.finish_reason]
        assert sum((c["logprobs"]["tokens"] for c in mine if c["logprobs"]), []) == list(choice.text)


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "abc", "top_k": 0}, 400, "top-k must be at least 1"),
    ({"prompt": "xyz"}, 400, "text has 3 characters not in the model's vocabulary: 'x', 'y', 'z'"),
    ({"prompt": "a", "ban": "z"}, 400, "ban: 'z' is not in the model's vocabulary"),
    ({"prompt": "a", "max_tokens": -1}, 400, "max_tokens must be an integer"),
    ({"prompt": "a", "temprature": 1}, 400, "unknown field temprature"),
    ({"prompt": "a", "model": "gpt-4"}, 404, "does not exist"),
    ({"prompt": "a" * 101}, 413, "at most 100"),
    ({"prompt": "a", "beams": 2, "stream": True, "seed": 1}, 400, "draws nothing: drop seed, stream"),
])
def test_bad_requests_get_openai_errors_with_the_clis_words(tiny, body, status, words):
    reply = httpx.post(f"{tiny.url}/v1/completions", json=body)
    assert reply.status_code == status and words in reply.json()["error"]["message"], reply.text


def test_bad_http_gets_json_errors(tiny):
    assert httpx.get(f"{tiny.url}/nowhere").status_code == 404
    assert httpx.get(f"{tiny.url}/v1/completions").status_code == 405
    assert httpx.post(f"{tiny.url}/v1/completions", content=b"{not json").status_code == 400
    huge = httpx.post(f"{tiny.url}/v1/completions", content=b"{" + b" " * 20_000 + b"}")
    assert huge.status_code == 413 and "body" in huge.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="top-k"):
        tiny.client.completions.create(model="tiny", prompt="a", extra_body={"top_k": 0})
    assert httpx.get(f"{tiny.url}/health").json()["status"] == "ok"


def test_a_client_that_goes_away_frees_its_lanes(tiny):
    with httpx.stream("POST", f"{tiny.url}/v1/completions", json={"prompt": "a", "max_tokens": 4096, "seed": 1,
                                                                 "stream": True}) as response:
        assert response.status_code == 200
        for _ in zip(range(20), response.iter_lines()):
            pass
    assert lanes_freed(tiny)


def lanes_freed(served) -> bool:
    """Within 10 s, no lane in the batch and no request in hand (from /metrics)."""
    for _ in range(200):
        metrics = httpx.get(f"{served.url}/metrics").text
        if "charlstm_active_lanes 0" in metrics and "charlstm_requests_in_hand 0" in metrics:
            return True
        time.sleep(0.05)
    return False


def generated(served) -> int:
    """The server's count of characters generated, from /metrics."""
    line = next(x for x in httpx.get(f"{served.url}/metrics").text.splitlines()
                if x.startswith("charlstm_characters_generated_total "))
    return int(line.split()[1])


@pytest.mark.slow
def test_a_slow_reader_holds_its_lanes_back_not_the_servers_memory():
    served = Served(TINY, max_tokens=10**7)
    try:
        with httpx.stream("POST", f"{served.url}/v1/completions", json={"prompt": "a", "max_tokens": 10**7, "seed": 4,
                                                                       "stream": True}) as slow:
            lines = slow.iter_lines()
            first = [next(lines) for _ in range(3)]
            counts = [generated(served)]  # not reading: the sockets' buffers fill, then the job waits
            while len(counts) < 40 and (len(counts) < 2 or counts[-1] != counts[-2]):
                time.sleep(0.3)
                counts.append(generated(served))
            assert counts[-1] == counts[-2] < 300_000, counts  # it would run to 10^7 in seconds
            text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in [*first, *itertools.islice(lines, 3000)]
                           if line.startswith("data: {"))
        assert text == generate(served.model, "a", len(text), seed=4)
    finally:
        served.close()


def test_a_full_queue_is_429_with_retry_after():
    served = Served(TINY, max_queue=1, max_tokens=10**7)
    try:
        with httpx.stream("POST", f"{served.url}/v1/completions", json={"prompt": "a", "max_tokens": 10**7,
                                                                       "stream": True}) as long:
            assert long.status_code == 200
            lines = long.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)
            busy = httpx.post(f"{served.url}/v1/completions", json={"prompt": "a", "max_tokens": 3})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert lanes_freed(served), "the long stream's client went away after one line: its lane leaves"
    finally:
        served.close()
    assert not served.thread.is_alive(), "the server stopped"


def test_an_api_key_is_required_when_set():
    served = Served(TINY, api_key="s3cret")
    try:
        assert httpx.get(f"{served.url}/health").status_code == 401
        assert httpx.get(f"{served.url}/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert served.client.completions.create(model="tiny", prompt="a", max_tokens=3, seed=1).choices[0].text
    finally:
        served.close()


@pytest.mark.slow
def test_the_cli_refuses_an_open_host_without_a_key_and_stops_cleanly_on_sigterm(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "charlstm-serve")
    refused = subprocess.run([exe, str(TINY), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "CHARLSTM_API_KEY"})
    assert refused.returncode == 2 and "API key" in refused.stderr and "Traceback" not in refused.stderr
    port = free_port()
    proc = subprocess.Popen([exe, str(TINY), "--port", str(port), "--threads", "1", "--max-tokens", "10000000"],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions",
                          json={"prompt": "a", "max_tokens": 10**7, "seed": 1, "stream": True}) as response:
            lines = response.iter_lines()
            next(lines)
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]", "the stream in flight ends properly"
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
        assert proc.wait(30) == 0
    finally:
        proc.kill()


@pytest.mark.slow
def test_the_documented_examples_run():
    """docs/serve.md's curl line and Python example, against the shipped model on this test's port."""
    from test_docs import SERVER, blocks, commands

    served = Served(SHIPPED)
    try:
        here = lambda text: text.replace("127.0.0.1:8000", f"127.0.0.1:{served.port}")  # noqa: E731
        doc = ROOT / "docs" / "serve.md"
        curl = next(c for c in commands(doc) if c.startswith("curl "))
        reply = json.loads(subprocess.run(["bash", "-c", here(curl)], capture_output=True, text=True, timeout=60,
                                          check=True).stdout)
        assert reply["choices"][0]["text"] == generate(served.model, "ALCESTE.", 80, seed=1)
        examples = [code for path in (doc, ROOT / "README.md") for code in blocks(path, ("python",)) if SERVER in code]
        assert len(examples) == 2
        for code in examples:
            proc = subprocess.run([sys.executable, "-c", here(code)], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.startswith(generate(served.model, "ALCESTE.", 80, seed=1) + "\n")
    finally:
        served.close()
