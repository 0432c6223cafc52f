"""Training throughput: charlstm's batched trainer against the notebook's batch-1 loop, same model.

    python bench/train_throughput.py [--corpus PATH] [--seconds 8] [--repeats 3] [--json out.json]

The notebook loop is the reference course's: batch 1, chunks of 100 characters, one forward
call and one Adam step per chunk, state carried between chunks. charlstm's is Trainer.train_step
with its default batch and sequence length, in fp32 and with --precision bf16. All train the
same CharLSTM on the same text; the table gives characters per second (medians over repeats)
and the ratios to the notebook loop.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from charlstm.train import CharLSTM, ModelConfig, Trainer
from shared_corpus import MOLIERE

SIZES = [(128, 1), (512, 2)]


def timed(step, chars_per_step: int, seconds: float) -> float:
    """Characters per second of `step` over about `seconds`, after two warm-up calls."""
    step(), step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * chars_per_step / (time.perf_counter() - t0)


def notebook_loop(ids: torch.Tensor, config: ModelConfig, seq_len: int = 100):
    model = CharLSTM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    position, state = [0], None

    def step():
        nonlocal state
        i = position[0]
        x, y = ids[i : i + seq_len, None], ids[i + 1 : i + seq_len + 1, None]  # (T, 1)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state = (state[0].detach(), state[1].detach())
        position[0] = (i + seq_len) % (len(ids) - seq_len - 1)

    return step, seq_len


def charlstm_trainer(corpus: Path, hidden: int, layers: int, precision: str):
    trainer = Trainer(corpus, {"hidden_size": hidden, "num_layers": layers}, {"precision": precision}, device="cpu")
    return trainer.train_step, trainer.options.batch_size * trainer.options.seq_len, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=MOLIERE)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} repeats of"
          f" {args.seconds:.0f} s each, medians\n")
    print(f"{'model':>8} {'notebook':>10} {'charlstm fp32':>14} {'ratio':>6} {'charlstm bf16':>14} {'ratio':>6}"
          "   (characters per second)")
    for hidden, layers in SIZES:
        fp32, chars, trainer = charlstm_trainer(args.corpus, hidden, layers, "fp32")
        bf16, _, _ = charlstm_trainer(args.corpus, hidden, layers, "bf16")
        notebook, notebook_chars = notebook_loop(trainer.corpus.train_ids, trainer.config)
        runs = {"notebook": [], "fp32": [], "bf16": []}
        for _ in range(args.repeats):  # interleaved, so drift in machine speed hits all three
            runs["notebook"].append(timed(notebook, notebook_chars, args.seconds))
            runs["fp32"].append(timed(fp32, chars, args.seconds))
            runs["bf16"].append(timed(bf16, chars, args.seconds))
        row = {"model": f"{layers}x{hidden}", "batch": trainer.options.batch_size,
               "seq_len": trainer.options.seq_len, **{k: statistics.median(v) for k, v in runs.items()}}
        rows.append(row)
        print(f"{row['model']:>8} {row['notebook']:>10,.0f} {row['fp32']:>14,.0f} {row['fp32'] / row['notebook']:>5.1f}x"
              f" {row['bf16']:>14,.0f} {row['bf16'] / row['notebook']:>5.1f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
