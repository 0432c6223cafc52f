"""The network — Embedding → multi-layer nn.LSTM (seq-first) → Linear — used by training and export."""

import torch
from torch import nn

from charlstm.train.config import ModelConfig

State = tuple[torch.Tensor, torch.Tensor]  # h, c: (L, B, H) each


class CharLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
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
        x = self.embedding(tokens)  # (T, B, E)
        y, state = self.lstm(x, state)  # (T, B, H)
        return self.head(self.drop(y)), state
