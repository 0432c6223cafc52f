"""The network — Embedding → multi-layer nn.LSTM (seq-first) → Linear — used by training and export.

Training may regularise it as AWD-LSTM does (Regularization): whole characters dropped from
the embedding, locked dropout (one mask per sequence, shared by every step) on the embedding
output, between layers and on the last output, and DropConnect on the recurrent matrices.
None of it changes the weights' names or the eval-mode graph: evaluation and export see a
plain nn.LSTM. Each layer still runs as one fused LSTM call over the whole chunk.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.train.config import ModelConfig

State = tuple[torch.Tensor, torch.Tensor]  # h, c: (L, B, H) each


@dataclass(frozen=True)
class Regularization:
    """Dropout probabilities used in training only; all 0: the model's plain dropout alone."""

    embed: float = 0.0  # whole characters: rows of the embedding table, one mask per training step
    input: float = 0.0  # locked, on the embedding output
    hidden: float = 0.0  # locked, between LSTM layers
    output: float = 0.0  # locked, on the last LSTM layer's output
    weight: float = 0.0  # DropConnect on each layer's weight_hh, one mask per training step

    @property
    def active(self) -> bool:
        return any((self.embed, self.input, self.hidden, self.output, self.weight))


class CharLSTM(nn.Module):
    def __init__(self, config: ModelConfig, regularization: Regularization = Regularization()):
        super().__init__()
        self.config, self.regularization = config, regularization
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        inter_layer = config.dropout if config.num_layers > 1 else 0.0
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_size, config.num_layers, dropout=inter_layer)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def zero_state(self, batch: int) -> State:
        c = self.config
        h = torch.zeros(c.num_layers, batch, c.hidden_size, device=self.head.weight.device)
        return h, h.clone()

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (T, B) int64 → logits (T, B, V) and the state after the last step."""
        if self.training and self.regularization.active:
            return self._regularized(tokens, state)
        x = self.embedding(tokens)  # (T, B, E)
        y, state = self.lstm(x, state)  # (T, B, H)
        return self.head(self.drop(y)), state

    def _regularized(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        r, lstm = self.regularization, self.lstm
        table = self.embedding.weight  # (V, E)
        if r.embed:
            table = table * _mask(table, (table.shape[0], 1), r.embed)
        x = _locked(F.embedding(tokens, table), r.input)  # (T, B, E)
        h0, c0 = state if state is not None else self.zero_state(tokens.shape[1])
        hs, cs = [], []
        for k in range(lstm.num_layers):
            w_hh = getattr(lstm, f"weight_hh_l{k}")
            if r.weight:
                w_hh = w_hh * _mask(w_hh, w_hh.shape, r.weight)
            weights = [getattr(lstm, f"weight_ih_l{k}"), w_hh, getattr(lstm, f"bias_ih_l{k}"),
                       getattr(lstm, f"bias_hh_l{k}")]
            x, h, c = torch._VF.lstm(x, (h0[k:k + 1], c0[k:k + 1]), weights, True, 1, 0.0, True, False, False)
            if k + 1 < lstm.num_layers:
                x = F.dropout(_locked(x, r.hidden), lstm.dropout)  # (T, B, H)
            hs.append(h)
            cs.append(c)
        y = self.drop(_locked(x, r.output))
        return self.head(y), (torch.cat(hs), torch.cat(cs))


def initialise(model: CharLSTM, init: str) -> None:
    """"torch": leave nn.LSTM's own draw (every weight U(±1/sqrt(H))): each layer passes on a
    fraction of its input, and in a fresh 3 x 512 model the logits move by ~0.002 with the
    characters read, so training sits on the unigram plateau for ~100 steps. "unit-gain": each
    layer's weight_ih U(±sqrt(3/in)), so that an input of unit variance gives gate
    pre-activations of unit variance (the logits move by ~0.017; it leaves the plateau after 20-60)."""
    if init == "unit-gain":
        with torch.no_grad():
            for k in range(model.lstm.num_layers):
                w = getattr(model.lstm, f"weight_ih_l{k}")  # (4H, in)
                bound = math.sqrt(3 / w.shape[1])
                w.uniform_(-bound, bound)


def _mask(like: torch.Tensor, shape, p: float) -> torch.Tensor:
    """Keep each element with probability 1 - p, scaled by 1 / (1 - p)."""
    return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)


def _locked(x: torch.Tensor, p: float) -> torch.Tensor:
    """Locked (variational) dropout of x (T, B, F): one mask per lane, the same at every step."""
    return x * _mask(x, (1, *x.shape[1:]), p) if p else x
