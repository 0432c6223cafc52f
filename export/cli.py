"""`charlstm-export`: a thin click layer over charlstm.export.export."""

from pathlib import Path

import click

from charlstm.core import clikit
from charlstm.core.errors import EXIT_FAILED
from charlstm.export.agreement import ATOL, MAX_KL, RTOL, STEPS

PROG = "charlstm-export"
EXAMPLES = """\b
Examples:
  charlstm-export model.pt                 # writes model.onnx beside it
  charlstm-export model.pt -o app/assets/moliere.onnx --atol 1e-5
  charlstm-export model.pt --quantize int8      # writes model.int8.onnx
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write the .onnx file [default: CHECKPOINT with .onnx].")
@click.option("--atol", type=float, default=ATOL, show_default=True,
              help="Validation: |torch - onnxruntime| may reach atol + rtol * |torch|.")
@click.option("--rtol", type=float, default=RTOL, show_default=True,
              help="Validation: the relative part, for the cell state, which grows large.")
@click.option("--steps", type=click.IntRange(min=1), default=STEPS, show_default=True,
              help="Autoregressive steps per validation scenario.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Run the file in onnxruntime beside torch before keeping it.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Write int8 weights (about 4x smaller, faster on CPUs) [default output: CHECKPOINT.int8.onnx].")
@click.option("--max-kl", type=float, default=MAX_KL, show_default=True,
              help="With --quantize: largest mean KL divergence (nats/char) from torch's predictions.")
@click.option("--prefill/--no-prefill", default=True, show_default=True,
              help="Also write OUTPUT.prefill.onnx, a sequence graph that primes prompts and scores texts fast.")
def command(checkpoint: Path, output: Path | None, atol: float, rtol: float, steps: int, validate: bool,
            prefill: bool, quantize: str | None, max_kl: float):
    """Export a charlstm checkpoint to one self-contained single-step ONNX file."""
    clikit.require_extra(PROG, "torch", "onnx")
    from charlstm.export.exporter import ValidationFailed, export

    try:
        result = export(checkpoint, output, validate_graph=validate, atol=atol, steps=steps, prefill=prefill,
                        quantize=quantize, max_kl=max_kl, rtol=rtol)
    except ValidationFailed as e:
        click.echo(e.report.table(), err=True)
        clikit.fail(PROG, f"validation failed for {', '.join(e.report.failed)}; nothing was written", EXIT_FAILED)
    if result.report is not None:
        click.echo(f"validation: torch vs onnxruntime, {steps} steps x (zero, random state) x (batch 1, 4)",
                   err=True)
        click.echo(result.report.table(), err=True)
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(result.ops.items()))
    click.echo(f"wrote {result.path} ({result.size / 1e6:.2f} MB; ops: {ops})"
               + (f" and {result.prefill}" if result.prefill else ""))


def main() -> None:
    clikit.run(command, PROG)
