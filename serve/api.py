"""The HTTP API: OpenAI's completions (streaming or not), models, charlstm's score, health and metrics, over Starlette."""

import asyncio
import contextlib
import functools
import hmac
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from charlstm.core.errors import BadInput
from charlstm.runtime.beams import beam_search
from charlstm.runtime.generate import lane_seeds, score, start_lanes
from charlstm.runtime.model import Model
from charlstm.runtime.rng import SEED_LIMIT
from charlstm.serve.engine import Engine, Job

# The request fields: OpenAI's completions fields, then charlstm's own (docs/serve.md).
OPENAI_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "logprobs",
                 "echo", "user", "frequency_penalty", "presence_penalty", "best_of", "suffix", "stream_options"}
SAMPLING_FIELDS = {"temperature", "top_p", "top_k", "min_p", "repetition_penalty", "logit_bias", "ban", "regex"}
OWN_FIELDS = SAMPLING_FIELDS - OPENAI_FIELDS | {"beams", "length_penalty"}
# What beams does not use (it ranks by the model's probabilities and draws nothing), as the CLI says.
NOT_WITH_BEAMS = ("temperature", "top_p", "top_k", "min_p", "seed", "n", "logprobs", "stream")
DEFAULT_MAX_TOKENS = 500  # charlstm-sample's -n: the same request and flags give the same text


@dataclass(frozen=True)
class Limits:
    """What charlstm-serve refuses beyond (its flags)."""

    max_lanes: int = 64  # lanes stepped at once (--max-batch)
    max_queue: int = 256  # requests admitted and not yet finished (--max-queue)
    max_prompt: int = 4096  # characters of one prompt (--max-prompt)
    max_tokens: int = 4096  # characters of one completion (--max-tokens)
    max_body: int = 1 << 20  # bytes of a request body
    timeout: float = 300.0  # seconds a request may take
    api_key: str | None = None  # required as a Bearer token when set


class Refused(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code=None, headers=None):
        super().__init__(message)
        self.status, self.kind, self.code, self.headers = status, kind, code, headers or {}


def error(status: int, message: str, kind: str = "invalid_request_error", code=None, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status, headers)


@dataclass
class Completion:
    """One completion request, checked: its prompts, options and seed."""

    prompts: list[str]
    n: int
    max_tokens: int
    seed: int
    stop: list[str]
    stream: bool
    echo: bool
    logprobs: int | None
    sampling: dict
    beams: int | None = None
    length_penalty: float = 0.0
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage


@dataclass
class Server:
    """The model, its batch and the counters, shared by the routes."""

    model: Model
    name: str
    limits: Limits
    engine: Engine = field(init=False)
    primer: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "charlstm-prime"))
    requests: dict = field(default_factory=dict)  # (route, status) → count
    in_flight: int = 0
    closing: bool = False

    def __post_init__(self):
        self.engine = Engine(self.model, self.limits.max_lanes)

    def close_streams(self) -> None:
        """Shutting down: refuse new requests; every job ends now, so that each request in flight
        gets its final event (finish_reason "length") and [DONE]."""
        self.closing = True
        self.engine.cancel_all()


def create_app(model: Model, name: str, limits: Limits = Limits()) -> Starlette:
    """The ASGI app serving `model` under the id `name`."""
    server = Server(model, name, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.engine.start()
        yield
        server.closing = True
        await server.engine.close()
        server.primer.shutdown(wait=False, cancel_futures=True)

    def route(handler, methods):
        async def endpoint(request: Request) -> Response:
            try:
                _authorize(request, limits)
                if server.closing:
                    raise Refused(503, "the server is shutting down", "server_error", headers={"Retry-After": "1"})
                response = await handler(server, request)
            except Refused as e:
                response = error(e.status, str(e), e.kind, e.code, e.headers)
            except BadInput as e:
                response = error(400, str(e))
            key = (request.url.path, response.status_code)
            server.requests[key] = server.requests.get(key, 0) + 1
            return response
        return Route(handler.path, endpoint, methods=methods)

    async def http_error(request, exc: HTTPException):
        words = {404: "no such route", 405: "method not allowed on this route"}.get(exc.status_code, exc.detail)
        return error(exc.status_code, f"{words}: {request.method} {request.url.path}", code=None)

    routes = [route(completions, ["POST"]), route(models, ["GET"]), route(score_text, ["POST"]),
              route(health, ["GET"]), route(metrics, ["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.server = server
    return app


def path(p):
    def mark(handler):
        handler.path = p
        return handler
    return mark


def _authorize(request: Request, limits: Limits) -> None:
    if limits.api_key is None:
        return
    given = request.headers.get("authorization", "")
    expected = f"Bearer {limits.api_key}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refused(401, "a valid API key is required (Authorization: Bearer KEY)", "authentication_error",
                      "invalid_api_key")


async def _json(request: Request, limits: Limits) -> dict:
    """The request's JSON object, read up to the body limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise Refused(413, f"the request body is over {limits.max_body:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body:
            raise Refused(413, f"the request body is over {limits.max_body:,} bytes")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused(400, f"the body is not JSON ({e})") from None
    if not isinstance(parsed, dict):
        raise Refused(400, "the body must be a JSON object")
    return parsed


def _int(body: dict, key: str, default, low: int, high: int | None = None):
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f"from {low:,} to {high:,}" if high is not None else f"of at least {low:,}"
        raise BadInput(f"{key} must be an integer {bound}, not {json.dumps(value)}")
    return value


def _parse(body: dict, server: Server) -> Completion:
    limits = server.limits
    unknown = sorted(set(body) - OPENAI_FIELDS - OWN_FIELDS)
    if unknown:
        raise BadInput(f"unknown field{'s' * (len(unknown) > 1)} {', '.join(unknown)} (docs/serve.md lists the fields)")
    if body.get("model") not in (None, server.name):
        raise Refused(404, f"the model {body['model']!r} does not exist; this server serves {server.name!r}",
                      code="model_not_found")
    for key in ("frequency_penalty", "presence_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise BadInput(f"{key} is not supported (use repetition_penalty)")
    if body.get("suffix") is not None:
        raise BadInput("suffix is not supported")
    prompt = body.get("prompt", "")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadInput("prompt must be a string or a non-empty list of strings")
    longest = max(len(p) for p in prompts)
    if longest > limits.max_prompt:
        raise Refused(413, f"the prompt has {longest:,} characters; this server takes at most {limits.max_prompt:,}")
    n = _int(body, "n", 1, 1, limits.max_lanes)
    if body.get("best_of") not in (None, n):
        raise BadInput("best_of is not supported (use beams)")
    if n * len(prompts) > limits.max_lanes:
        raise BadInput(f"n × prompts is {n * len(prompts)}; this server steps at most {limits.max_lanes} lanes at once")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadInput("stop must be a string or a list of strings")
    seed = _int(body, "seed", None, 0, SEED_LIMIT - 1)
    sampling = {k: body[k] for k in SAMPLING_FIELDS if body.get(k) is not None}
    if isinstance(sampling.get("logit_bias"), dict):
        sampling["logit_bias"] = dict(sampling["logit_bias"])
    completion = Completion(prompts, n, _int(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, limits.max_tokens),
                            secrets.randbits(64) if seed is None else seed, stop, _flag(body, "stream"),
                            _flag(body, "echo"), _int(body, "logprobs", None, 0), sampling,
                            _int(body, "beams", None, 1), body.get("length_penalty", 0.0))
    if completion.beams is not None:
        drawn = sorted(k for k in NOT_WITH_BEAMS if body.get(k) not in (None, False) and (k != "n" or body[k] != 1))
        if drawn:
            raise BadInput(f"beams ranks continuations by the model's probabilities and draws nothing: drop"
                           f" {', '.join(drawn)}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise BadInput("stream_options takes include_usage only")
    completion.include_usage = _flag(options, "include_usage")
    if completion.echo and completion.logprobs is not None:
        raise BadInput("echo with logprobs is not supported (the prompt's characters are not scored)")
    return completion


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool) and value is not None:
        raise BadInput(f"{key} must be true or false")
    return bool(value)


@path("/v1/completions")
async def completions(server: Server, request: Request) -> Response:
    c = _parse(await _json(request, server.limits), server)
    if server.in_flight >= server.limits.max_queue:
        raise Refused(429, f"the server has {server.in_flight} requests in hand (--max-queue); try again shortly",
                      "rate_limit_error", headers={"Retry-After": "1"})
    meta = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": server.name}
    if c.beams is not None:
        return JSONResponse(await _beams(server, c, meta))
    headers = {"X-Charlstm-Seed": str(c.seed)}
    server.in_flight += 1  # until its last job has left the batch (_arrive)
    try:
        jobs, events = await _start(server, c)
    except BaseException:
        server.in_flight -= 1
        raise
    if c.stream:
        return StreamingResponse(_sse(server, c, meta, jobs, events), media_type="text/event-stream", headers=headers)
    try:
        return JSONResponse(await asyncio.wait_for(_collect(c, meta, jobs, events), server.limits.timeout),
                            headers=headers)
    except TimeoutError:
        raise Refused(504, f"the completion took longer than {server.limits.timeout:g} s (--timeout)",
                      "server_error") from None
    finally:
        for job in jobs:
            job.cancelled = True


async def _start(server: Server, c: Completion):
    """Each prompt's lanes, primed off the batch's thread, submitted to the batch; the events
    (prompt index, pieces or None at its end, records) come to one queue. Every job leaves the
    batch by its deadline, whatever becomes of the request."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    deadline, left = time.monotonic() + server.limits.timeout, [len(c.prompts)]
    primed = []
    for k, prompt in enumerate(c.prompts):
        start = functools.partial(start_lanes, server.model, prompt, c.max_tokens, num_samples=c.n,
                                  seed=(c.seed + k * c.n) % SEED_LIMIT, stop=c.stop, top=c.logprobs, **c.sampling)
        primed.append(await loop.run_in_executor(server.primer, start))
    jobs = [Job(lanes, logits, state, functools.partial(_arrive, server, events, left, k), deadline=deadline)
            for k, (lanes, logits, state) in enumerate(primed)]
    for job in jobs:
        server.engine.submit(job)
    return jobs, events


def _arrive(server: Server, events: asyncio.Queue, left: list, k: int, pieces, records) -> None:
    """An event of job k, from the batch: the request's stream takes it from its queue."""
    events.put_nowait((k, pieces, records))
    if pieces is None:
        left[0] -= 1
        if left[0] == 0:
            server.in_flight -= 1


class _Choice:
    """One lane's text as it comes, its records in step with the characters let out."""

    def __init__(self, index: int, echo: str, logprobs: int | None):
        self.index, self.text, self.logprobs = index, echo, logprobs
        self.drawn, self.tokens, self.token_logprobs, self.top, self.offsets = [], [], [], [], []

    def add(self, piece: str, records) -> dict | None:
        """The new text's logprobs in OpenAI's shape (None without logprobs)."""
        if records is not None:
            self.drawn.append(records)
        new = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for ch in piece:
            record = self.drawn.pop(0) if self.logprobs is not None else None
            if record is not None:
                new["tokens"].append(record.char)
                new["token_logprobs"].append(record.logprob)
                new["top_logprobs"].append({c: lp for c, _, lp in record.top})
                new["text_offset"].append(len(self.text))
            self.text += ch
        for key, out in (("tokens", self.tokens), ("token_logprobs", self.token_logprobs), ("top_logprobs", self.top),
                         ("text_offset", self.offsets)):
            out.extend(new[key])
        return new if self.logprobs is not None else None

    def whole_logprobs(self) -> dict | None:
        if self.logprobs is None:
            return None
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs, "top_logprobs": self.top,
                "text_offset": self.offsets}


def _choices(c: Completion) -> list[list[_Choice]]:
    return [[_Choice(k * c.n + i, prompt if c.echo else "", c.logprobs) for i in range(c.n)]
            for k, prompt in enumerate(c.prompts)]


async def _events(c: Completion, jobs, events: asyncio.Queue):
    """(choice, new text, its logprobs) as they come, then (choice, None, finish reason) for each."""
    choices, left = _choices(c), len(jobs)
    while left:
        k, pieces, records = await events.get()
        jobs[k].taken += pieces is not None
        if pieces is None:
            left -= 1
            for choice, stopped in zip(choices[k], jobs[k].lanes.stopped()):
                yield choice, None, "stop" if stopped else "length"
            continue
        for i, piece in enumerate(pieces):
            choice = choices[k][i]
            lane_records = None if records is None else records[i]
            if piece or lane_records is not None:
                logprobs = choice.add(piece, lane_records)
                if piece:
                    yield choice, piece, logprobs


async def _collect(c: Completion, meta: dict, jobs, events) -> dict:
    finished = {}
    async for choice, piece, reason in _events(c, jobs, events):
        if piece is None:
            finished[choice.index] = {"text": choice.text, "index": choice.index,
                                      "logprobs": choice.whole_logprobs(), "finish_reason": reason}
    generated = sum(len(ch["text"]) for ch in finished.values()) - (sum(map(len, c.prompts)) * c.n if c.echo else 0)
    return {**meta, "choices": [finished[i] for i in sorted(finished)], "seed": c.seed, "usage": _usage(c, generated)}


def _usage(c: Completion, generated: int) -> dict:
    """OpenAI's usage, in characters (a character is a token here)."""
    prompt_chars = sum(len(p) for p in c.prompts)
    return {"prompt_tokens": prompt_chars, "completion_tokens": generated, "total_tokens": prompt_chars + generated}


_JSON = json.JSONEncoder(ensure_ascii=False)  # one encoder, not one per call as json.dumps(..., ensure_ascii=False) makes


def _chunk_template(meta: dict):
    """chunk(index, text, logprobs, reason): one SSE event of OpenAI's completion chunk, the same bytes as
    json.dumps of the whole object, with the fields that never change within a request serialised once
    (a stream sends one of these per character)."""
    head = "data: " + _JSON.encode(meta)[:-1] + ', "choices": [{"text": '

    def chunk(index: int, text: str, logprobs, reason) -> str:
        return (f'{head}{_JSON.encode(text)}, "index": {index}, "logprobs": {_JSON.encode(logprobs)},'
                f' "finish_reason": {_JSON.encode(reason)}}}]}}\n\n')
    return chunk


async def _sse(server: Server, c: Completion, meta: dict, jobs, events):
    chunk = _chunk_template(meta)
    try:
        if c.echo:
            for k, prompt in enumerate(c.prompts):
                for i in range(c.n):
                    yield chunk(k * c.n + i, prompt, None, None)
        generated = 0
        async with asyncio.timeout(server.limits.timeout):
            async for choice, piece, extra in _events(c, jobs, events):  # extra: logprobs, or the finish reason
                generated += len(piece or "")
                yield chunk(choice.index, "", None, extra) if piece is None else chunk(choice.index, piece, extra, None)
        if c.include_usage:
            yield f"data: {json.dumps({**meta, 'choices': [], 'usage': _usage(c, generated)})}\n\n"
        yield "data: [DONE]\n\n"
    except TimeoutError:
        message = {"error": {"message": f"the completion took longer than {server.limits.timeout:g} s (--timeout)",
                             "type": "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(message)}\n\ndata: [DONE]\n\n"
    finally:  # the client went away, or the stream ended: its lanes leave the batch now
        for job in jobs:
            job.cancelled = True


async def _beams(server: Server, c: Completion, meta: dict) -> dict:
    loop, options, found = asyncio.get_running_loop(), c.sampling, []
    for k, prompt in enumerate(c.prompts):
        search = functools.partial(beam_search, server.model, prompt, c.max_tokens, c.beams,
                                   length_penalty=c.length_penalty, stop=c.stop, **options)
        beams = await asyncio.wait_for(loop.run_in_executor(server.primer, search), server.limits.timeout)
        found += [{"text": (prompt if c.echo else "") + b.text, "index": len(found) + i, "logprobs": None,
                   "finish_reason": "length", "logprob": b.logprob, "score": b.score} for i, b in enumerate(beams)]
    return {**meta, "choices": found}


@path("/v1/models")
async def models(server: Server, request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": server.name, "object": "model", "created": 0,
                                                     "owned_by": "charlstm", **_sizes(server.model)}]})


def _sizes(model: Model) -> dict:
    return {"num_layers": model.num_layers, "hidden_size": model.hidden_size, "vocab_size": model.vocab_size}


@path("/v1/score")
async def score_text(server: Server, request: Request) -> Response:
    body = await _json(request, server.limits)
    text = body.get("text")
    if not isinstance(text, str):
        raise BadInput("text must be a string")
    if len(text) > server.limits.max_body:
        raise Refused(413, "the text is over the body limit")
    measured = await asyncio.get_running_loop().run_in_executor(server.primer, score, server.model, text)
    return JSONResponse({"object": "score", "model": server.name, "nats_per_char": measured.nats_per_char,
                         "chars": measured.chars})


@path("/health")
async def health(server: Server, request: Request) -> Response:
    return JSONResponse({"status": "ok", "model": server.name})


@path("/metrics")
async def metrics(server: Server, request: Request) -> Response:
    m = server.engine.metrics
    lines = ["# TYPE charlstm_requests_total counter"]
    lines += [f'charlstm_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(server.requests.items())]
    lines += ["# TYPE charlstm_active_lanes gauge", f"charlstm_active_lanes {m.active_lanes}",
              "# TYPE charlstm_queue_depth gauge", f"charlstm_queue_depth {m.waiting}",
              "# TYPE charlstm_requests_in_hand gauge", f"charlstm_requests_in_hand {server.in_flight}",
              "# TYPE charlstm_characters_generated_total counter", f"charlstm_characters_generated_total {m.characters}",
              "# TYPE charlstm_step_seconds summary", f"charlstm_step_seconds_sum {m.step_seconds:.6f}",
              f"charlstm_step_seconds_count {m.steps}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
