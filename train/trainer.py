"""One training run around the loop: setup and resume, validation and checkpoints, Ctrl-C, progress, history."""

import contextlib
import math
import platform
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.core.artifacts import check_train_paths, curve_path, latest_path, train_outputs
from charlstm.core import limits
from charlstm.core.errors import BadInput, Note
from charlstm.core.files import claim
from charlstm.train import checkpoint, loop, threads
from charlstm.train.checkpoint import Checkpoint, Record, Resume
from charlstm.train.config import DROPOUTS, ModelConfig, TrainOptions
from charlstm.train.data import Corpus, Lanes, ValLanes
from charlstm.train.distributed import Ranks, from_environment, pick_device
from charlstm.train.model import CharLSTM, Regularization, initialise


CURVE_SECONDS = 10.0  # the loss curve is redrawn at most this often while a run goes on


class Interrupted(Exception):
    """Ctrl-C: a resumable checkpoint was written to `self.args[0]` before stopping."""


class Diverged(Exception):
    """The loss became NaN or infinite. Nothing was saved from that step on: the best and the
    resumable checkpoints on disk, if any, are from the last finite validation."""


@dataclass
class TrainResult:
    best: Path | None  # the best checkpoint by validation loss; None: this run did not write one
    latest: Path  # the resumable checkpoint
    step: int
    best_val_loss: float
    seconds: float
    history: list = field(default_factory=list)
    curve: Path | None = None  # the loss curve; None without matplotlib or when not asked for
    resumed_finished: bool = False  # --resume of a run that had already reached its last step


def _merge(kind: str, chosen: dict, stored: dict) -> dict:
    """Options chosen on a resumed run must agree with those it was started with."""
    for key, value in chosen.items():
        if stored[key] != value:
            flag = "--" + key.replace("_", "-")
            raise BadInput(f"--resume: the run was started with {flag} {stored[key]}, not {value} ({kind})")
    return stored


class Trainer:
    """One training run: the model, its optimizer, the data position and the carried state.

    Under torchrun each process is one rank (train/distributed.py): it owns a contiguous share
    of the --batch-size lanes and trains them under DistributedDataParallel; rank 0 prepares the
    corpus cache first, writes every file and speaks. `cache_dir`: where the corpus's prepared
    ids are cached (default: beside the corpus, or the user's cache folder). `max_params`: the
    largest model it builds (limits.MAX_PARAMETERS)."""

    def __init__(self, corpus_path, model_args=None, train_args=None, device="auto", resume=None,
                 cache_dir=None, ranks: Ranks | None = None, max_params: int = limits.MAX_PARAMETERS,
                 threads: int | None = None):
        self.ranks, self.device = from_environment(device) if ranks is None else (ranks, pick_device(device, ranks))
        model_args, train_args = dict(model_args or {}), dict(train_args or {})
        self.paths = (corpus_path, resume)  # what the run reads, which it must not write
        ckpt = self._resumable(resume) if resume else None
        self.threads = _threads(threads, ckpt.resume.threads if ckpt else None)
        torch.set_num_threads(self.threads)
        if ckpt:
            train_args = _merge("training option", train_args, TrainOptions.stored(ckpt.train.options))
        self.options = TrainOptions(**train_args)
        o = self.options
        if not loop.supports(o.precision, self.device):
            raise BadInput(f"--precision {o.precision}: this machine's {self.device.type} cannot train an LSTM in it"
                           f" (bfloat16 needs AVX512-BF16 or AMX on a CPU); "
                           + ("the run was started in it, so it continues only on a machine that has it" if ckpt
                              else "use --precision fp32"))
        self.corpus = self._main_first(lambda: Corpus.load(corpus_path, o.val_fraction, o.normalize_newlines, cache_dir))
        if ckpt:
            self._check_same_corpus(ckpt)
            model_args = _merge("model option", model_args, ckpt.config.to_dict())
        self.config = ModelConfig(**{**model_args, "vocab_size": len(self.corpus.vocab)})
        self.config.check_size(max_params)
        self.lanes = Lanes(self.corpus.train_ids, o.batch_size, o.seq_len, o.seed, self.ranks.lanes(o.batch_size))
        self.total_steps = o.epochs * self.lanes.chunks_per_epoch
        if o.max_steps is not None:
            self.total_steps = min(self.total_steps, o.max_steps)

        self.planned_epochs = self.total_steps / self.lanes.chunks_per_epoch
        self.regularization_scale = o.regularization_scale(self.planned_epochs)
        torch.manual_seed(o.seed)
        self.model = CharLSTM(self.config, Regularization(
            *(getattr(o, name) * self.regularization_scale for name in DROPOUTS)))
        initialise(self.model, o.init)
        self.model.to(self.device)
        self.net = self.model if self.ranks.world == 1 else torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.ranks.world > 1:  # each rank its own dropout masks
            torch.manual_seed(o.seed * 1_000_003 + self.ranks.rank)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.step_no, self.best_val, self.history, self.seconds = 0, math.inf, [], 0.0
        self.state, self._offset, self._losses = None, None, []
        self.average = [p.detach().clone() for p in self.model.parameters()] if o.ema else None
        if ckpt:
            self._restore(ckpt)

    def _main_first(self, work):
        """work() on rank 0, then on the other ranks once it has succeeded (they reuse what it
        prepared); its BadInput fails every rank, so that none waits for it."""
        result, error = None, None
        if self.ranks.main:
            try:
                result = work()
            except BadInput as e:
                error = str(e)
        error = self.ranks.gather_objects(error)[0]
        if error:
            raise BadInput(error)
        return result if self.ranks.main else work()

    # -- resume ------------------------------------------------------------------
    @staticmethod
    def _resumable(path) -> Checkpoint:
        ckpt = checkpoint.load(path)
        if ckpt.resume is None:
            raise BadInput(
                f"--resume: {path} holds no optimizer state (a best-model checkpoint);"
                f" resume from the run's {latest_path(path).name} instead"
            )
        return ckpt

    def _check_same_corpus(self, ckpt: Checkpoint) -> None:
        if ckpt.train.corpus_sha256 != self.corpus.sha256 or ckpt.vocab != self.corpus.vocab:
            raise BadInput("--resume: the checkpoint was trained on another corpus (sha256 or vocabulary differ)")

    def _restore(self, ckpt: Checkpoint) -> None:
        self.model.load_state_dict(ckpt.state_dict)
        self.optimizer.load_state_dict(ckpt.resume.optimizer)
        r = ckpt.resume
        self.step_no, self.best_val, self.history = r.step, r.best_val, list(r.history)
        self._losses = list(r.losses)
        if self.average is not None:
            for mine, saved in zip(self.average, r.average, strict=True):
                mine.copy_(saved)
        self.seconds = ckpt.train.seconds
        mine = self.lanes.lanes  # this rank's share of the carried state of every lane
        self.state = (r.h[:, mine].to(self.device), r.c[:, mine].to(self.device)) if r.h is not None else None
        states = r.rng.get("ranks") or [r.rng["torch"]]
        torch.set_rng_state(states[self.ranks.rank] if len(states) == self.ranks.world else states[0])
        if self.device.type == "cuda" and r.rng.get("cuda") is not None:
            torch.cuda.set_rng_state(r.rng["cuda"])

    # -- the loop's steps, at this run's data position --------------------------------
    def train_step(self) -> float:
        """One optimizer step on the next chunk of every lane; returns the loss (nats/char)."""
        epoch, i = divmod(self.step_no, self.lanes.chunks_per_epoch)
        if i == 0 or self._offset is None:
            self._offset = self.lanes.epoch(epoch)
        if i == 0:
            self.state = None  # each epoch starts from zero state
        x, y = (t.to(self.device) for t in self.lanes.chunk(self._offset, i))  # (T, B)
        o = self.options
        loss, self.state = loop.train_step(self.net, self.optimizer, x, y, self.state,
                                           lr=loop.lr_at(self.step_no, self.total_steps, o.lr),
                                           clip=o.clip, precision=o.precision)
        self.step_no += 1
        if self.average is not None:
            self._update_average()
        return loss

    @torch.no_grad()
    def _update_average(self) -> None:
        """The exponential moving average of the weights, its decay ramped up over the first
        steps ((1 + n) / (10 + n), at most --ema: an average over the last n / 9 steps or so) so
        that early validations are not of the initial weights. A run that --regularization-epochs
        scales averages over that many times fewer steps ((s (10 + n) - 9) / (s (10 + n)), at
        least 0; the same bits at s = 1): while the loss still falls fast, an average lags it."""
        span = self.regularization_scale * (10 + self.step_no)
        decay = min(self.options.ema, max(0.0, (span - 9) / span))
        for average, p in zip(self.average, self.model.parameters()):
            average.lerp_(p, 1 - decay)

    @contextlib.contextmanager
    def averaged(self):
        """The model holds the averaged weights inside (with --ema; else its own)."""
        if self.average is None:
            yield
            return
        params = list(self.model.parameters())
        trained = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(params, trained):
                    p.copy_(t)

    def evaluate(self) -> float:
        """Validation loss, nats/char, over the held-out tail in lanes with carried state (split
        over the ranks, summed)."""
        total, count = loop.evaluate(self.model, ValLanes(self.corpus.val_ids, lanes=self.ranks.share), self.device)
        total, count = self.ranks.sum(total, count)
        return total / count

    # -- checkpoints ---------------------------------------------------------------
    def checkpoint(self, resumable: bool, val_loss: float) -> Checkpoint:
        """The run as a checkpoint; the resumable one gathers every rank's carried state and
        random state, so every rank calls it."""
        c = self.corpus
        record = Record(
            corpus_sha256=c.sha256,
            split={"val_fraction": self.options.val_fraction,
                   "train_chars": len(c.train_ids), "val_chars": len(c.val_ids)},
            step=self.step_no,
            epoch=self.step_no / self.lanes.chunks_per_epoch,
            train_loss=self.history[-1]["train_loss"] if self.history else math.nan,
            val_loss=val_loss,
            seed=self.options.seed,
            options=self.options.to_dict(),
            versions={"torch": str(torch.__version__), "python": platform.python_version(), "charlstm": _version()},
            device=self.device.type,
            seconds=self.seconds,
            history=list(self.history),
        )
        ckpt = Checkpoint(self.config, list(c.vocab), self.model.state_dict(), record)
        if resumable:
            cuda = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
            h, c_ = (self.ranks.gather_lanes(x) for x in (self.state or (None, None)))
            rng = {"torch": torch.get_rng_state(), "cuda": cuda}
            if self.ranks.world > 1:
                rng["ranks"] = self.ranks.gather_objects(rng["torch"])
            ckpt.resume = Resume(self.optimizer.state_dict(), rng, self.step_no, self.best_val, list(self.history),
                                 list(self._losses), h, c_, torch.get_num_threads(),
                                 [a.detach().cpu().clone() for a in self.average] if self.average is not None else None)
        return ckpt

    # -- the run -----------------------------------------------------------------
    def validates_at(self, step: int) -> bool:
        """--eval-every N: every N steps and at the end; by default 20 times per run, at each
        twentieth of it (every step of a run shorter than 20 steps)."""
        every, total = self.options.eval_every, self.total_steps
        if every:
            return step % every == 0 or step == total
        return step * 20 // total > (step - 1) * 20 // total

    def run(self, out, progress: bool = True, log=None, curve: bool = True) -> TrainResult:
        """Train to the end, validating (validates_at), saving the best checkpoint to `out`,
        the resumable one beside it and, with `curve`, the loss curve; Ctrl-C raises
        Interrupted, as does SIGTERM (what torchrun sends its workers). The run claims its files:
        another run writing one of them is refused. Under torchrun every rank calls run()."""
        out = Path(out)
        check_train_paths(self.paths[0], out, self.paths[1])
        log = log if self.ranks.main else (lambda msg: None)
        with claim(train_outputs(out)) if self.ranks.main else contextlib.nullcontext():
            return self._run(out, progress and self.ranks.main, log or (lambda msg: print(msg, file=sys.stderr)),
                             curve and self.ranks.main)

    def _run(self, out: Path, progress: bool, log, curve: bool) -> TrainResult:
        run = _Run(out, latest_path(out), _bar(self, progress), log, curve, (len(self.history), time.monotonic()))
        finished_before = self.step_no >= self.total_steps
        stop = _StopFlag(escalate=self.ranks.world == 1)
        try:
            with stop:
                while self.step_no < self.total_steps:
                    loss = self._timed_step(out)
                    _advance(run.bar, self, loss)
                    if self.validates_at(self.step_no):
                        self._validate_and_save(run)
                        self._plot(run, force=False)
                    if self.ranks.sum(float(stop.raised))[0]:  # one rank's signal stops them all here
                        self._save(run.latest, self.checkpoint(True, self.best_val))
                        raise Interrupted(run.latest)
        except (Interrupted, Diverged):
            self._plot(run, force=True)
            raise
        finally:
            if run.bar:
                run.bar.close()
        self._plot(run, force=True)
        best = out if run.wrote_best or (self.ranks.main and self._holds_best(out)) else None
        return TrainResult(best, run.latest, self.step_no, self.best_val, self.seconds, self.history, run.curve_file,
                           finished_before)

    def _timed_step(self, out: Path) -> float:
        """One step of every rank, timed; the mean loss of all lanes, checked."""
        t0 = time.perf_counter()
        (loss,) = self.ranks.sum(self.train_step())
        self._losses.append(loss / self.ranks.world)
        self.seconds += time.perf_counter() - t0
        self._check_finite("training", self._losses[-1], out)
        return self._losses[-1]

    def _holds_best(self, out: Path) -> bool:
        """Whether `out` already holds this run's best checkpoint (a resumed run that has not
        improved on it, writing the same -o as before)."""
        try:
            return out.is_file() and checkpoint.load(out).train.val_loss == self.best_val
        except BadInput:
            return False

    def _check_finite(self, which: str, loss: float, out: Path) -> None:
        if math.isfinite(loss):
            return
        kept = (f"the best checkpoint so far ({self.best_val:.4g} nats/char) is {out}" if math.isfinite(self.best_val)
                else "no checkpoint was written")
        raise Diverged(f"training diverged: {which} loss {loss} at step {self.step_no}; try a lower --lr"
                       f" (this run: {self.options.lr:g}); {kept}")

    def _plot(self, run: "_Run", force: bool) -> None:
        """Redraw the loss curve with the validations since the last drawing: at most every
        CURVE_SECONDS (drawing takes ~0.1 s), and always when the run stops."""
        drawn, at = run.plotted
        if not run.curve or len(self.history) == drawn or not (force or time.monotonic() - at >= CURVE_SECONDS):
            return
        from charlstm.train.plot import save_loss_curve  # matplotlib is optional

        run.curve_file = curve_path(run.out) if save_loss_curve(self.history, curve_path(run.out)) else None
        run.plotted = (len(self.history), time.monotonic())

    def _validate_and_save(self, run: "_Run") -> None:
        """Validate (with --ema, the averaged weights), keep the best checkpoint (of the weights
        validated), then the resumable one (of the trained weights)."""
        with self.averaged():
            t0 = time.perf_counter()
            val = self.evaluate()
            self.seconds += time.perf_counter() - t0
            self._check_finite("validation", val, run.out)
            train_loss = sum(self._losses) / max(1, len(self._losses))
            self._losses = []
            self.history.append({"step": self.step_no, "train_loss": train_loss, "val_loss": val,
                                 "seconds": self.seconds})
            improved = val < self.best_val
            if improved:
                self.best_val = val
                if self.ranks.main:
                    checkpoint.save(run.out, self.checkpoint(False, val))
                run.wrote_best = True
        self._save(run.latest, self.checkpoint(True, val))
        msg = (f"step {self.step_no}/{self.total_steps}  train {train_loss:.4f}  val {val:.4f} nats/char"
               + ("  (best, saved)" if improved else ""))
        run.say(msg)

    def _save(self, path: Path, ckpt: Checkpoint) -> None:
        """Rank 0 writes; the others have given their part to `ckpt` and go on."""
        if self.ranks.main:
            checkpoint.save(path, ckpt)


@dataclass
class _Run:
    """One call of Trainer.run: the files it writes, where it speaks, what it wrote so far."""

    out: Path
    latest: Path
    bar: object  # tqdm, or None
    log: object  # message -> None, where there is no bar
    curve: bool  # whether to draw the loss curve
    plotted: tuple[int, float]  # validations drawn, and when
    wrote_best: bool = False
    curve_file: Path | None = None

    def say(self, message: str) -> None:
        if self.bar:
            self.bar.write(message, file=sys.stderr)
        else:
            self.log(message)


def _threads(chosen: int | None, recorded: int | None) -> int:
    """torch's intra-op threads: those chosen, else those a resumed run used (the same bits
    need the same summation order), else train/threads.py's default."""
    if chosen is not None and (not isinstance(chosen, int) or isinstance(chosen, bool)
                               or not 1 <= chosen <= limits.MAX_THREADS):
        raise BadInput(f"--threads must be an integer from 1 to {limits.MAX_THREADS}, not {chosen!r}")
    if chosen is not None and recorded and chosen != recorded:
        warnings.warn(Note(f"--threads {chosen}: the run was started with {recorded}; from here it sums in another"
                           " order, so it will not be bit-identical to an uninterrupted run"), stacklevel=3)
    return chosen or recorded or threads.default_threads()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charlstm")
    except PackageNotFoundError:
        return "unknown"


def _bar(trainer: Trainer, progress: bool):
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    chars = trainer.options.batch_size * trainer.options.seq_len
    return tqdm(total=trainer.total_steps * chars, initial=trainer.step_no * chars, unit="char",
                unit_scale=True, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _advance(bar, trainer: Trainer, loss: float) -> None:
    if bar:
        best = f" best val {trainer.best_val:.3f}" if trainer.history else ""
        bar.set_postfix_str(f"loss {loss:.3f}{best}", refresh=False)
        bar.update(trainer.options.batch_size * trainer.options.seq_len)


class _StopFlag:
    """First Ctrl-C (or SIGTERM, which torchrun and schedulers send) asks the loop to stop after
    the current step; a second one stops at once — except under torchrun, whose agent forwards
    the terminal's Ctrl-C to workers that got it already, and kills them itself if they linger."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, escalate: bool = True):
        self.raised, self.escalate, self._old = False, escalate, {}

    def _handle(self, signum, frame):
        if self.raised and self.escalate:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self):
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self._old = {}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
