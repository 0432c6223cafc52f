"""An independent reference: the char-LSTM step written from the equations in numpy (float64).

It reads only the checkpoint's tensors, never charlstm's model code. PyTorch stacks the four
gates of each layer's weights in the order i, f, g, o:
    i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                       h' = o ⊙ tanh(c')
"""

import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class ReferenceLSTM:
    def __init__(self, state_dict: dict, num_layers: int):
        w = {k: v.detach().cpu().double().numpy() for k, v in state_dict.items()}
        self.embedding = w["embedding.weight"]  # (V, E)
        self.layers = [(w[f"lstm.weight_ih_l{k}"], w[f"lstm.weight_hh_l{k}"],
                        w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"]) for k in range(num_layers)]
        self.head_w, self.head_b = w["head.weight"], w["head.bias"]  # (V, H), (V,)

    def step(self, tokens, h, c):
        """tokens (B,), h and c (L, B, H) → logits (B, V), h', c' (float64)."""
        x = self.embedding[np.asarray(tokens)]  # (B, E)
        h_out, c_out = np.empty_like(h, dtype=np.float64), np.empty_like(c, dtype=np.float64)
        for k, (w_ih, w_hh, b) in enumerate(self.layers):
            gates = x @ w_ih.T + h[k] @ w_hh.T + b  # (B, 4H)
            i, f, g, o = np.split(gates, 4, axis=1)
            c_out[k] = _sigmoid(f) * c[k] + _sigmoid(i) * np.tanh(g)
            h_out[k] = _sigmoid(o) * np.tanh(c_out[k])
            x = h_out[k]
        return x @ self.head_w.T + self.head_b, h_out, c_out
