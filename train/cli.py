"""`charlstm-train`: a thin click layer over charlstm.train.Trainer."""

import contextlib
import dataclasses
from pathlib import Path

import click

from charlstm.core import clikit, limits
from charlstm.core.artifacts import check_train_paths, train_outputs
from charlstm.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, BadInput, plural
from charlstm.core.files import claim
from charlstm.train.config import INITS, SEED_LIMIT, ModelConfig, TrainOptions

PROG = "charlstm-train"
EXAMPLES = """\b
Examples:
  charlstm-train moliere.txt -o model.pt
  charlstm-train notes.txt -o small.pt --hidden-size 128 --num-layers 1 --epochs 3
  charlstm-train moliere.txt -o model.pt --resume model.last.pt   # after Ctrl-C
"""


def _opt(flag: str, cls, type_, help_: str, default_text: str | None = None):
    """An option whose default lives in the dataclass; None means 'not chosen' (for --resume)."""
    name = flag.lstrip("-").replace("-", "_")
    default = default_text or {f.name: f.default for f in dataclasses.fields(cls)}[name]
    return click.option(flag, name, type=type_, default=None, help=f"{help_} [default: {default}]")


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("model.pt"),
              show_default=True, help="Best checkpoint by validation loss; the resumable one is OUTPUT.last.pt.")
@_opt("--hidden-size", ModelConfig, int, "LSTM units per layer.")
@_opt("--num-layers", ModelConfig, int, "Stacked LSTM layers.")
@_opt("--embed-dim", ModelConfig, int, "Character embedding size.")
@_opt("--dropout", ModelConfig, float, "Dropout between layers and before the output layer.")
@_opt("--seq-len", TrainOptions, int, "Characters per back-propagation chunk.")
@_opt("--batch-size", TrainOptions, int, "Parallel lanes over the corpus.")
@_opt("--lr", TrainOptions, float, "Peak learning rate (AdamW; warm-up, then cosine decay).")
@_opt("--weight-decay", TrainOptions, float, "AdamW weight decay.")
@_opt("--clip", TrainOptions, float, "Largest global gradient norm; larger gradients are scaled down.")
@_opt("--epochs", TrainOptions, int, "Passes over the training text.")
@_opt("--max-steps", TrainOptions, int, "Stop after this many optimizer steps.", "--epochs decides")
@_opt("--val-fraction", TrainOptions, float, "Tail of the corpus held out for validation.")
@_opt("--eval-every", TrainOptions, int, "Steps between validations.", "20 per run")
@_opt("--seed", TrainOptions, click.IntRange(0, SEED_LIMIT - 1), "Seed for initialisation, dropout and data order.")
@_opt("--precision", TrainOptions, click.Choice(["fp32", "bf16"]),
      "bf16: bfloat16 autocast, about 1.7x faster on CPUs with AVX512-BF16 and on GPUs.")
@_opt("--embed-dropout", TrainOptions, float, "Drop whole characters: rows of the embedding, per step.")
@_opt("--input-dropout", TrainOptions, float, "Locked dropout (one mask per lane and chunk) on the embedding output.")
@_opt("--hidden-dropout", TrainOptions, float, "Locked dropout between LSTM layers.")
@_opt("--output-dropout", TrainOptions, float, "Locked dropout on the last LSTM output.")
@_opt("--weight-drop", TrainOptions, float, "DropConnect on the recurrent matrices (weight_hh), per step.")
@_opt("--ema", TrainOptions, float, "Validate and keep an exponential moving average of the weights with this"
      " decay (0: none).")
@_opt("--regularization-epochs", TrainOptions, float, "A run planned for fewer epochs than this scales the five"
      " dropouts above, and the --ema average's span, by its planned epochs / this (a short run over-fits less;"
      " 0: never).")
@_opt("--init", TrainOptions, click.Choice(INITS), "The weights' initialisation. unit-gain:"
      " each LSTM layer's input weights scaled so that its gates see its input at unit gain; a deep model leaves"
      " the unigram plateau sooner.")
@click.option("--keep-crlf", "normalize_newlines", flag_value=False, default=None,
              help="Keep CR and CRLF line ends as they are. [default: read them as \\n]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to train: auto takes a GPU when torch sees one, else the CPU.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted run from its OUTPUT.last.pt. [default: a new run]")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where the corpus's prepared token ids are cached. [default: beside the corpus]")
@click.option("--max-params", type=click.IntRange(min=1), default=limits.MAX_PARAMETERS, show_default=True,
              help="The largest model built, in parameters (a guard against sizes a machine cannot hold).")
@click.option("--threads", type=click.IntRange(1, limits.MAX_THREADS), default=None,
              help="torch's intra-op threads. [default: a resumed run's; else OMP_NUM_THREADS; else the cores"
                   " idle when the run starts]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on a terminal.")
def command(corpus: Path, output: Path, device: str, resume: Path | None, cache_dir: Path | None, progress: bool,
            max_params: int, threads: int | None, **chosen):
    """Train a character-level LSTM on CORPUS (a UTF-8 text file) and write a checkpoint.

    Under torchrun (torchrun --nproc_per_node=N -m charlstm.train ...) each process trains a
    share of the lanes; rank 0 writes the files and prints."""
    from charlstm.train.threads import prepare_environment

    prepare_environment()  # before torch is imported
    clikit.require_extra(PROG, "torch", "tqdm")
    from charlstm.train.distributed import from_environment, quiet_unless_main

    quiet_unless_main()
    if cache_dir is not None and not cache_dir.is_dir():
        raise BadInput(f"--cache-dir {cache_dir} is not a folder")
    check_train_paths(corpus, output, resume)
    ranks, torch_device = from_environment(device)
    try:  # before any work; the run claims them again, as the API does
        with claim(train_outputs(output)) if ranks.main else contextlib.nullcontext():
            _train(corpus, output, str(torch_device), ranks, resume, cache_dir, progress, chosen, max_params, threads)
    finally:
        ranks.close()


def _train(corpus: Path, output: Path, device: str, ranks, resume: Path | None, cache_dir: Path | None,
           progress: bool, chosen: dict, max_params: int, threads: int | None) -> None:
    from charlstm.train.trainer import Diverged, Interrupted, Trainer

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    picked = {k: v for k, v in chosen.items() if v is not None}
    trainer = Trainer(corpus, {k: v for k, v in picked.items() if k in model_fields},
                      {k: v for k, v in picked.items() if k not in model_fields}, device, resume, cache_dir, ranks,
                      max_params, threads)
    _describe(trainer)
    try:
        result = trainer.run(output, progress)
    except Interrupted as e:
        again = (f"{PROG} {corpus} -o {output} --resume {e.args[0]}" if ranks.world == 1 else
                 f"the same torchrun command with --resume {e.args[0]} (any number of processes that divides"
                 f" --batch-size)")
        clikit.fail(PROG, f"interrupted at step {trainer.step_no}; continue with: {again}", EXIT_INTERRUPTED)
    except Diverged as e:
        clikit.fail(PROG, str(e), EXIT_FAILED)
    click.echo(_summary(result, trainer.options, output))


def _summary(result, options, output: Path) -> str:
    from charlstm.train import plot

    chars = result.step * options.batch_size * options.seq_len
    done = (f"the run was already finished (step {result.step})" if result.resumed_finished else
            f"done: {plural(result.step, 'step', grouped=False)}, {plural(chars, 'character')} in {result.seconds:.0f} s"
            f" ({chars / max(result.seconds, 1e-9):,.0f} chars/s)")
    if result.best is None:
        return (f"{done}; nothing new to write: its best checkpoint (validation loss {result.best_val_loss:.4f}"
                f" nats/char) is the one it wrote before --resume, which the resumable checkpoint does not"
                f" hold; {output} was not written")
    curve = (f"loss curve: {result.curve}" if result.curve else
             "no loss curve (matplotlib is not installed: pip install matplotlib)" if not plot.available() else
             "loss curve unchanged")
    return (f"{done}; best validation loss {result.best_val_loss:.4f} nats/char -> {result.best};"
            f" resumable: {result.latest}; {curve}")


def _describe(trainer) -> None:
    c, o, corpus, ranks = trainer.config, trainer.options, trainer.corpus, trainer.ranks
    n_params = sum(p.numel() for p in trainer.model.parameters())
    cache = "reused" if corpus.rebuilt is None else f"built ({corpus.rebuilt})"
    where = f" x {ranks.world} processes" if ranks.world > 1 else ""
    scaled = (f"; dropouts x {trainer.regularization_scale:.3g} (a run of"
              f" {trainer.planned_epochs:.3g} epochs, --regularization-epochs"
              f" {o.regularization_epochs:g})" if trainer.regularization_scale < 1 else "")
    click.echo(f"{plural(len(corpus.vocab), 'character')} in the vocabulary, {len(corpus.train_ids):,}"
               f" training / {len(corpus.val_ids):,} validation characters (ids {cache}: {corpus.cache});"
               f" model {c.num_layers} x {c.hidden_size} ({n_params:,} parameters) on {trainer.device.type}{where}"
               f" ({plural(trainer.threads, 'thread')});"
               f" {trainer.total_steps} steps of {o.batch_size} x {o.seq_len} characters"
               + (f", from step {trainer.step_no}" if trainer.step_no else "") + scaled, err=True)


def main() -> None:
    clikit.run(command, PROG)
