"""`charlstm-serve`: a thin click layer that serves one model over HTTP (serve.api) with uvicorn."""

import contextlib
import ipaddress
import os
import signal
from pathlib import Path

import click

from charlstm.core import clikit, limits
from charlstm.core.errors import BadInput

PROG = "charlstm-serve"
KEY_VARIABLE = "CHARLSTM_API_KEY"
EXAMPLES = """\b
Examples:
  charlstm-serve                                   # the shipped model on http://127.0.0.1:8000
  charlstm-serve model.onnx --port 9000 --max-batch 128
  CHARLSTM_API_KEY=secret charlstm-serve --host 0.0.0.0   # elsewhere than this machine: a key
  curl -s 127.0.0.1:8000/v1/completions -d '{"prompt": "ALCESTE.", "max_tokens": 80, "seed": 1}'
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than a loopback one needs an API key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-batch", type=click.IntRange(1, limits.MAX_BATCH), default=64, show_default=True,
              help="Lanes stepped through the model at once; more wait.")
@click.option("--max-queue", type=click.IntRange(1), default=256, show_default=True,
              help="Requests in hand at once; more get 429 with Retry-After.")
@click.option("--max-prompt", type=click.IntRange(1, limits.MAX_LENGTH), default=4096, show_default=True,
              help="Characters of a prompt; longer ones get 413.")
@click.option("--max-tokens", type=click.IntRange(0, limits.MAX_LENGTH), default=4096, show_default=True,
              help="Characters a request may ask for (max_tokens).")
@click.option("--max-body", type=click.IntRange(1), default=1 << 20, show_default=True,
              help="Bytes of a request body; more get 413.")
@click.option("--timeout", type=click.FloatRange(min=0.001), default=300.0, show_default=True,
              help="Seconds a request may take; then its lanes leave the batch.")
@click.option("--threads", type=click.IntRange(1, limits.MAX_THREADS), default=None,
              help="onnxruntime threads. [default: cores, at most 4]")
@click.option("--api-key", default=None, help=f"Require this Bearer token. [default: ${KEY_VARIABLE}, else none]")
def command(model: Path | None, host: str, port: int, max_batch: int, max_queue: int, max_prompt: int,
            max_tokens: int, max_body: int, timeout: float, threads: int | None, api_key: str | None) -> None:
    """Serve a charlstm MODEL (.onnx made by charlstm-export) over HTTP: OpenAI's completions API
    (streaming too), /v1/models, /v1/score, /health, /metrics. Concurrent requests are stepped as
    one batch; each gets the text charlstm-sample prints for its options and seed.

    Without MODEL, the Molière model shipped with charlstm is served."""
    clikit.require_extra(PROG, "starlette", "uvicorn", extra="serve", install=clikit.INSTALL_SERVE)
    import uvicorn

    from charlstm.runtime.cli import _model_path
    from charlstm.runtime.model import Model
    from charlstm.serve.api import Limits, create_app

    api_key = api_key or os.environ.get(KEY_VARIABLE) or None
    if api_key is None and not _loopback(host):
        raise BadInput(f"--host {host} opens the server to other machines: give an API key (--api-key or"
                       f" ${KEY_VARIABLE})")
    path = _model_path(model)
    served = Model(path, threads=threads)
    app = create_app(served, path.stem, Limits(max_batch, max_queue, max_prompt, max_tokens, max_body, timeout,
                                                api_key))
    click.echo(f"{PROG}: serving {path} as {path.stem!r} on http://{host}:{port} (Ctrl-C stops)", err=True)
    _server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10),
            app.state.server).run()


def _server(config, served):
    """uvicorn's server, stopped by SIGTERM or Ctrl-C as a service should be: no new requests (503),
    every stream in flight ended with a final event and [DONE], then exit 0 (uvicorn itself would
    raise the signal again once it has shut down)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

        def handle_exit(self, sig, frame):
            served.close_streams()
            super().handle_exit(sig, frame)

    return Server(config)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    clikit.run(command, PROG)
