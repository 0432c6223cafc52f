"""`charlstm-export`: a thin click layer over charlstm.export.export."""

from pathlib import Path

import click

from charlstm.core import clikit, limits
from charlstm.core.artifacts import QUANTIZE_KINDS
from charlstm.core.errors import EXIT_FAILED, BadInput
from charlstm.export.agreement import ATOL, MAX_KL, RTOL, STEPS

PROG = "charlstm-export"
EXAMPLES = """\b
Examples:
  charlstm-export model.pt                 # writes model.onnx beside it
  charlstm-export model.pt -o app/assets/moliere.onnx --atol 1e-5
  charlstm-export model.pt --quantize int8      # writes model.int8.onnx
  charlstm-export model.pt --quantize int8-weights   # model.int8-weights.onnx, for web pages
\b
A model trained elsewhere (Embedding -> nn.LSTM -> Linear, any module names):
  charlstm-export sd.pt --vocab-corpus moliere.txt --vocab-corpus-chars 100000
  charlstm-export whole_model.pt --vocab stoi.json     # torch.save(model), read without its code
  charlstm-export notebook.pt                          # {'model': state_dict, 'chars': chars}
  charlstm-export char_rnn.pt                          # {'state_dict': ..., 'tokens': chars}
  charlstm-export epoch=9.ckpt --vocab-key itos        # Lightning; the file holds two vocabularies
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write the .onnx file [default: CHECKPOINT with .onnx].")
@click.option("--vocab", "vocab_file", type=click.Path(path_type=Path), default=None,
              help="The vocabulary of a model whose file has none: JSON (a list of characters in id order, or a"
                   " mapping either way) or text (one character per line in id order, a line break written \\n)."
                   " [default: the one in the file]")
@click.option("--vocab-key", default=None, metavar="NAME",
              help="Which of the file's vocabularies to use, where it holds several different ones (the name or"
                   " dotted path the error lists). [default: the only one]")
@click.option("--vocab-corpus", type=click.Path(path_type=Path), default=None,
              help="Or: the sorted distinct characters of this UTF-8 text (read in text mode, as"
                   " sorted(set(open(TEXT).read()[:N])) does). [default: none]")
@click.option("--vocab-corpus-chars", type=click.IntRange(min=1), default=None,
              help="With --vocab-corpus: only its first N characters. [default: all]")
@click.option("--atol", type=float, default=ATOL, show_default=True,
              help="Validation: |torch - onnxruntime| may reach atol + rtol * |torch|.")
@click.option("--rtol", type=float, default=RTOL, show_default=True,
              help="Validation: the relative part, for the cell state, which grows large.")
@click.option("--steps", type=click.IntRange(min=1), default=STEPS, show_default=True,
              help="Autoregressive steps per validation scenario.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Run the file in onnxruntime beside torch before keeping it.")
@click.option("--quantize", type=click.Choice(QUANTIZE_KINDS), default=None,
              help="int8: int8 arithmetic (about 4x smaller, faster on CPUs, slower in browsers); int8-weights:"
                   " int8 storage only (about 4x smaller, fp32 speed everywhere). Written to"
                   " CHECKPOINT.int8.onnx (.int8-weights.onnx) unless -o is given. [default: off]")
@click.option("--max-kl", type=float, default=MAX_KL, show_default=True,
              help="With --quantize: largest mean KL divergence (nats/char) from torch's predictions.")
@click.option("--prefill/--no-prefill", default=True, show_default=True,
              help="Also write OUTPUT.prefill.onnx, a sequence graph that primes prompts and scores texts fast.")
@click.option("--max-params", type=click.IntRange(min=1), default=limits.MAX_PARAMETERS, show_default=True,
              help="The largest model read, in parameters (a guard against files that ask for more than a machine"
                   " holds).")
def command(checkpoint: Path, output: Path | None, vocab_file: Path | None, vocab_key: str | None,
            vocab_corpus: Path | None, vocab_corpus_chars: int | None, atol: float, rtol: float, steps: int,
            validate: bool, prefill: bool, quantize: str | None, max_kl: float, max_params: int):
    """Export a model to one self-contained single-step ONNX file.

    CHECKPOINT is a charlstm checkpoint, or an Embedding -> nn.LSTM -> Linear model trained
    elsewhere: a state_dict, a dict holding one and perhaps its vocabulary (a Lightning .ckpt
    too), a whole pickled model (read without running its code) or a TorchScript file. For such
    a file it prints what it read, part by part, before the validation."""
    clikit.require_extra(PROG, "torch", "onnx")
    from charlstm.export.exporter import ExportOptions, ValidationFailed, export

    options = ExportOptions(validate, atol, rtol, steps, prefill, quantize, max_kl, max_params,
                            _vocabulary(vocab_file, vocab_corpus, vocab_corpus_chars), vocab_key)
    try:
        result = export(checkpoint, output, options, inputs={"--vocab": vocab_file, "--vocab-corpus": vocab_corpus})
    except ValidationFailed as e:
        click.echo(e.report.table(), err=True)
        clikit.fail(PROG, f"validation failed for {', '.join(e.report.failed)}; nothing was written", EXIT_FAILED)
    for line in result.conversion:
        click.echo(line, err=True)
    if result.report is not None:
        click.echo(f"validation: torch vs onnxruntime, {steps} steps x (zero, random state) x (batch 1, 4)",
                   err=True)
        click.echo(result.report.table(), err=True)
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(result.ops.items()))
    click.echo(f"wrote {result.path} ({result.size / 1e6:.2f} MB; ops: {ops})"
               + (f" and {result.prefill}" if result.prefill else ""))


def _vocabulary(vocab_file, vocab_corpus, chars):
    from charlstm.export import vocabulary

    if vocab_file and vocab_corpus:
        raise BadInput("give the vocabulary once: --vocab or --vocab-corpus, not both")
    if chars is not None and vocab_corpus is None:
        raise BadInput("--vocab-corpus-chars goes with --vocab-corpus")
    if vocab_file:
        return vocabulary.vocab_from_file(vocab_file)
    return vocabulary.vocab_from_corpus(vocab_corpus, chars) if vocab_corpus else None


def main() -> None:
    clikit.run(command, PROG)
