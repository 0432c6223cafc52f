"""`charlstm-sample`: a thin click layer over charlstm.runtime (numpy + onnxruntime only)."""

import itertools
import json
import secrets
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from charlstm.core import clikit, limits
from charlstm.core.errors import BadInput, plural
from charlstm.core.sampling import MAX_BEAMS, MAX_TOP
from charlstm.runtime.beams import beam_search
from charlstm.runtime.generate import check_held, lane_seeds, score, stream, stream_batch, stream_logprobs
from charlstm.runtime.model import Model
from charlstm.runtime.sampler import SamplingOptions

PROG = "charlstm-sample"
EXAMPLES = """\b
Examples:
  charlstm-sample model.onnx --prime "ALCESTE." -n 500
  charlstm-sample model.onnx --prime "Monsieur" --temperature 0.5 --seed 7
  charlstm-sample model.onnx --num-samples 3 -n 200 --stop $'\\n\\n'
  echo "Je vous" | charlstm-sample model.onnx --prime - --greedy -n 80
  charlstm-sample model.onnx --prime-file act1.txt -n 300   # a long prompt
  charlstm-sample model.onnx --score act1.txt       # nats per character of a text
  charlstm-sample --prime "ALCESTE."                # no MODEL: the shipped Molière model
"""
DEFAULTS = SamplingOptions()
# What --score does not use: given with it, they would be ignored, so they are refused.
GENERATION_ONLY = {"prime": "--prime", "prime_file": "--prime-file", "length": "-n", "temperature": "--temperature", "top_k": "--top-k",
                   "top_p": "--top-p", "min_p": "--min-p", "logit_bias": "--bias", "ban": "--ban", "regex": "--regex",
                   "greedy": "--greedy", "repetition_penalty": "--repetition-penalty",
                   "seed": "--seed", "num_samples": "--num-samples", "stop": "--stop", "echo": "--echo/--no-echo",
                   "logprobs": "--logprobs", "beams": "--beams", "length_penalty": "--length-penalty"}
# What --beams does not use: it ranks by the model's probabilities and draws nothing.
NOT_WITH_BEAMS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p",
                  "greedy": "--greedy", "seed": "--seed", "num_samples": "--num-samples", "logprobs": "--logprobs"}


# A fixed width, so that the help reads the same on every terminal and in the Node CLI, which
# prints this text (runtime/js/src/help.mjs, written by write_js_help).
HELP_WIDTH = 100
JS_HELP = Path(__file__).resolve().parent / "js" / "src" / "help.mjs"


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "terminal_width": HELP_WIDTH,
                                                  "max_content_width": HELP_WIDTH})
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--prime", default="", help="Text to start from; - reads it from stdin. [default: none]")
@click.option("--prime-file", type=click.Path(path_type=Path), default=None,
              help="Or: start from the text of this UTF-8 file (for long prompts). [default: none]")
@click.option("-n", "--length", type=click.IntRange(0, limits.MAX_LENGTH), default=500, show_default=True,
              help="Characters to generate.")
@click.option("--temperature", type=float, default=DEFAULTS.temperature, show_default=True,
              help="Below 1: safer text; above 1: wilder; 0: greedy.")
@click.option("--top-k", type=int, default=None, help="Sample among the K most likely characters. [default: off]")
@click.option("--top-p", type=float, default=None,
              help="Sample among the most likely characters totalling P. [default: off]")
@click.option("--min-p", type=float, default=None,
              help="Sample among the characters at least P times as likely as the likeliest. [default: off]")
@click.option("--bias", "logit_bias", multiple=True, metavar="CHAR=VALUE",
              help="Add VALUE (-100 to 100) to the character's logit; repeatable. [default: none]")
@click.option("--ban", default="", metavar="CHARS", help="Never draw these characters. [default: none]")
@click.option("--regex", default=None, metavar="PATTERN",
              help="Generate a text that matches PATTERN as a whole (docs/formats.md, section 11). [default: none]")
@click.option("--greedy", is_flag=True, help="Always take the most likely character. [default: off]")
@click.option("--repetition-penalty", type=float, default=DEFAULTS.repetition_penalty, show_default=True,
              help=f"Above 1 discourages characters of the last {DEFAULTS.repetition_window}.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Same seed, model and options: same text. [default: random, printed]")
@click.option("--num-samples", type=click.IntRange(1, limits.MAX_BATCH), default=1, show_default=True,
              help="Independent samples, run as one batch.")
@click.option("--stop", multiple=True, help="End a sample at this string (not printed); repeatable. [default: none]")
@click.option("--logprobs", type=click.IntRange(0, MAX_TOP), default=None, metavar="N",
              help="Print JSON Lines instead of the text: each character, its log-probability and the N likeliest"
                   " alternatives. [default: off]")
@click.option("--beams", type=click.IntRange(1, MAX_BEAMS), default=None, metavar="K",
              help="Print the K likeliest continuations (beam search) instead of sampling. [default: off]")
@click.option("--length-penalty", type=float, default=0.0, show_default=True,
              help="With --beams: rank by log-probability / length^X (0: the sum; larger: longer beams).")
@click.option("--unknown", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="Characters outside the model's vocabulary: refuse, or drop them.")
@click.option("--echo/--no-echo", default=True, show_default=True, help="Print the prompt before the text.")
@click.option("--score", "score_file", type=click.Path(path_type=Path), default=None,
              help="Print the model's nats per character on this text file instead of sampling."
                   " [default: off]")
@click.option("--threads", type=click.IntRange(1, limits.MAX_THREADS), default=None,
              help="onnxruntime threads. [default: cores, at most 4]")
def command(model: Path | None, prime: str, prime_file: Path | None, length: int, seed: int | None,
            num_samples: int, stop: tuple[str, ...], unknown: str, echo: bool, score_file: Path | None,
            threads: int | None, logprobs: int | None, beams: int | None, length_penalty: float, **sampling):
    """Generate text from a charlstm MODEL (.onnx made by charlstm-export), or score a text.

    Without MODEL, the Molière model shipped with charlstm is used."""
    if score_file is not None:
        _refuse_generation_options()
        return _score(Model(_model_path(model), threads=threads), score_file, unknown)
    if beams is not None:
        _refuse(NOT_WITH_BEAMS, "--beams ranks continuations by the model's probabilities and draws nothing")
    elif click.get_current_context().get_parameter_source("length_penalty") is not ParameterSource.DEFAULT:
        raise BadInput("--length-penalty goes with --beams")
    options = SamplingOptions(**{**sampling, "logit_bias": _biases(sampling["logit_bias"]),
                                 "ban": _argument_text(sampling["ban"], "--ban")})  # checked before loading
    check_held(length, num_samples)
    if logprobs is not None and num_samples > 1:
        raise BadInput("--logprobs describes one sample: drop --num-samples")
    if prime_file is not None and prime:
        raise BadInput("give the prompt once: --prime or --prime-file, not both")
    lm = Model(_model_path(model), threads=threads)
    prime = (_read_text(prime_file, "--prime-file") if prime_file is not None else
             _read_stdin() if prime == "-" else _argument_text(prime, "--prime"))
    chosen_seed = seed is not None
    seed = seed if chosen_seed else secrets.randbits(31)
    stop = [_argument_text(s, "--stop") for s in stop]
    kwargs = dict(seed=seed, stop=stop, unknown=unknown, options=options)
    shown = lm.decode(lm.encode(prime, unknown)) if echo else ""  # the prompt the model was given
    with clikit.reader_may_leave():
        if beams is not None:
            found = beam_search(lm, prime, length, beams, length_penalty=length_penalty, stop=stop, unknown=unknown,
                                logit_bias=options.logit_bias, ban=options.ban,
                                repetition_penalty=options.repetition_penalty, regex=options.regex)
            sys.stdout.write("".join(f"--- beam {i + 1} (log-probability {b.logprob:.4f}) ---\n{shown}{b.text}\n"
                                     for i, b in enumerate(found)))
        elif logprobs is not None:
            records = stream_logprobs(lm, prime, length, logprobs, **kwargs)
            if not chosen_seed and not options.is_greedy:
                click.echo(f"seed {seed} (pass --seed {seed} to get this text again)", err=True)
            _print_stream(json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        elif num_samples == 1:
            pieces = stream(lm, prime, length, **kwargs)  # checks the prompt before printing
            if not chosen_seed and not options.is_greedy:  # greedy text does not depend on a seed
                click.echo(f"seed {seed} (pass --seed {seed} to get this text again)", err=True)
            _print_stream(itertools.chain([shown], pieces, ["\n"]))
        else:
            steps = stream_batch(lm, prime, length, num_samples=num_samples, **kwargs)
            labels = [f"--- sample {i + 1}" + ("" if options.is_greedy else f" (seed {s})") + " ---"
                      for i, s in enumerate(lane_seeds(seed, num_samples))]
            _print_samples(steps, labels, shown)


def _print_samples(steps, labels: list[str], shown: str) -> None:
    """Samples of one batch, each under its label once complete; after Ctrl-C, what each had."""
    lanes = [[] for _ in labels]
    try:
        for pieces in steps:
            for lane, piece in zip(lanes, pieces):
                lane.append(piece)
    except KeyboardInterrupt:
        _write_samples(labels, shown, lanes, " (interrupted)")
        raise
    _write_samples(labels, shown, lanes, "")


def _write_samples(labels, shown, lanes, note) -> None:
    for label, lane in zip(labels, lanes):
        sys.stdout.write(f"{label}\n{shown}{''.join(lane)}{note}\n")
    sys.stdout.flush()


def _read_stdin() -> str:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"standard input is not UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None


def _argument_text(text: str, flag: str) -> str:
    """Text from the command line; bytes that were not UTF-8 arrive as lone surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{flag} is not valid UTF-8 text") from None
    return text


def _refuse_generation_options() -> None:
    _refuse(GENERATION_ONLY, "--score measures a text and does not generate")


def _refuse(flags: dict, why: str) -> None:
    """BadInput naming those of `flags` (parameter -> flag) that were given."""
    context = click.get_current_context()
    given = [flag for name, flag in flags.items() if context.get_parameter_source(name) is not ParameterSource.DEFAULT]
    if given:
        raise BadInput(f"{why}: drop {', '.join(given)}")


def _print_stream(pieces) -> None:
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()


def _model_path(model: Path | None) -> Path:
    if model is not None:
        return model
    from charlstm.models import default_model

    found = default_model()
    if found is None:
        raise BadInput("no MODEL given and no default model is installed; pass a .onnx file made by charlstm-export")
    return found


def _read_text(path: Path, flag: str) -> str:
    """A UTF-8 text file named on the command line (universal newlines, as Python's text mode);
    never a pipe or a device, whose reading may never end."""
    if path.exists() and not path.is_file():
        raise BadInput(f"{flag}: {path} is not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"text {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path} as UTF-8 text ({e.__class__.__name__})") from None


def _score(lm: Model, path: Path, unknown: str) -> None:
    s = score(lm, _read_text(path, "--score"), unknown)
    click.echo(f"{s.nats_per_char:.4f} nats/char ({s.bits_per_char:.4f} bits/char, perplexity"
               f" {s.perplexity:.3f}) over {plural(s.chars, 'character')} of {path}")


def _biases(given: tuple[str, ...]) -> dict[str, float]:
    """--bias CHAR=VALUE, each once: the character (one, before the last '=') and a number."""
    biases = {}
    for item in given:
        char, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or len(char) != 1 or number is None:
            raise BadInput(f"--bias {item!r}: write one character, '=' and a number (--bias '!=2.5')")
        if char in biases:
            raise BadInput(f"--bias names {char!r} twice")
        biases[char] = number
    return biases


def help_text() -> str:
    """What `charlstm-sample --help` prints."""
    with click.Context(command, info_name=PROG, **command.context_settings) as ctx:
        return ctx.get_help() + "\n"


def long_options() -> list[str]:
    with click.Context(command, info_name=PROG, **command.context_settings) as ctx:
        return [name for param in command.get_params(ctx) for name in (*param.opts, *param.secondary_opts)
                if name.startswith("--")]


def js_help_module() -> str:
    return ("// Generated by `python -m charlstm.runtime.cli --write-js-help` from runtime/cli.py: do not edit.\n"
            f"export const HELP = {json.dumps(help_text(), ensure_ascii=False)};\n"
            f"// the long options, among which click suggests one for a mistyped option\n"
            f"export const LONG_OPTIONS = {json.dumps(long_options())};\n")


def main() -> None:
    clikit.run(command, PROG)


if __name__ == "__main__" and sys.argv[1:] == ["--write-js-help"]:
    JS_HELP.write_text(js_help_module(), encoding="utf-8")
    print(f"wrote {JS_HELP}", file=sys.stderr)
