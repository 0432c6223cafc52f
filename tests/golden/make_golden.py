"""Regenerate the golden files: a tiny model's .onnx and torch's outputs for fixed inputs.

    python tests/golden/make_golden.py        # needs the train extra; rewrites tests/golden/

The runtime's parity tests (tests/test_golden.py) read these files without torch. Rerunning
on another machine or torch version may change the weights in the last bits; the tests then
still pass against the new files, which is the point: they pin torch's outputs to the graph.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "bench")]  # conftest, and what it imports

from charlstm.export import export  # noqa: E402
from charlstm.export.agreement import random_state  # noqa: E402
from charlstm.runtime import Model, SamplingOptions  # noqa: E402
from charlstm.runtime.sampler import choose  # noqa: E402
from charlstm.train import build_model, load_checkpoint  # noqa: E402
from conftest import markov_text, train_tiny  # noqa: E402

STEPS, BATCH = 200, 3
PROMPT, LENGTH, SEED = "abca", 120, 7
SAMPLING = {"temperature": 1.0, "top_k": 5}


def torch_text(model, vocab, prompt: str, options: SamplingOptions, seed: int | None) -> str:
    """Generation with torch's logits and the runtime's sampler (seed None: greedy)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    rngs = [np.random.default_rng(seed)]
    recent = np.full((1, options.repetition_window), -1)
    with torch.no_grad():
        logits, state = model(torch.tensor([index[ch] for ch in prompt])[:, None])
        logits, out = logits[-1].numpy(), []
        for _ in range(LENGTH):
            token = choose(logits, options, rngs, recent)
            out.append(vocab[int(token[0])])
            logits, state = model(torch.as_tensor(token)[None], state)
            logits = logits[0].numpy()
    return "".join(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "abcdef.txt"
        corpus.write_text(markov_text(20_000))
        result = train_tiny(corpus, Path(tmp) / "tiny.pt", train_args={"max_steps": 40})
        export(result.best, HERE / "tiny.onnx")
        ckpt = load_checkpoint(result.best)
    model, vocab = build_model(ckpt), ckpt.vocab
    cfg = model.config
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (STEPS, BATCH))
    h, c = random_state(cfg.num_layers, BATCH, cfg.hidden_size, rng)
    record = {"tokens": tokens, "h0": h, "c0": c, "logits": [], "h": [], "c": []}
    with torch.no_grad():
        state = (torch.from_numpy(h), torch.from_numpy(c))
        for step in range(STEPS):
            logits, state = model(torch.from_numpy(tokens[step])[None], state)
            for key, value in (("logits", logits[0]), ("h", state[0]), ("c", state[1])):
                record[key].append(value.numpy().copy())
    np.savez_compressed(HERE / "tiny_steps.npz", **{k: np.asarray(v) for k, v in record.items()})
    texts = {
        "prompt": PROMPT, "length": LENGTH, "seed": SEED, "sampling": SAMPLING,
        "greedy": torch_text(model, vocab, PROMPT, SamplingOptions(greedy=True), None),
        "sampled": torch_text(model, vocab, PROMPT, SamplingOptions(**SAMPLING), SEED),
    }
    (HERE / "tiny_texts.json").write_text(json.dumps(texts, indent=2) + "\n")
    print(f"wrote {HERE}/tiny.onnx, tiny_steps.npz, tiny_texts.json")


if __name__ == "__main__":
    main()
