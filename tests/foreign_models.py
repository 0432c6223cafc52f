"""Models trained the way people train them outside charlstm, saved every usual way (run as a script).

    python tests/foreign_models.py CORPUS FOLDER

The course notebook's class `lstm` (Embedding(V, H) → nn.LSTM(H, H, L) → Linear `fc`, its
vocabulary sorted(set(text[:100000])) of the text read in text mode) trained with its loop
(batch 1, chunks of 100, Adam) for a few dozen chunks; PyTorch's word_language_model RNNModel
(encoder / rnn / decoder, tied weights, log_softmax output); a model fed one-hot characters
(no Embedding; batch_first, no biases); the most copied char-RNN tutorial's CharRNN (one-hot,
batch_first, a dropout module, its `tokens` tuple in set order); a char-LM keeping zero initial
states as parameters, with a vocabulary file that writes <eos> for the line break; a
Lightning-style .ckpt; and models charlstm must refuse. The classes live in
__main__, as in a notebook, so that a pickled model names a class nobody can import. Writes
the files to FOLDER and, in FOLDER/reference.json, each model's own greedy text and loss.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

LENGTH, CHARS = 200, 100_000


class lstm(nn.Module):  # the course's name and layout
    def __init__(self, input_size, hidden_size, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers)
        self.fc = nn.Linear(hidden_size, input_size)

    def forward(self, x, hidden=None):  # (T, 1) → (T, 1, V)
        out, hidden = self.lstm(self.embedding(x), hidden)
        return self.fc(out), hidden


class RNNModel(nn.Module):  # pytorch/examples word_language_model, LSTM, tied
    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight
        self.ntoken = ntoken

    def forward(self, input, hidden=None):
        output, hidden = self.rnn(self.drop(self.encoder(input)), hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1).view(*input.shape, self.ntoken), hidden


class OneHot(nn.Module):  # no Embedding: one-hot characters into a batch-first LSTM without biases
    def __init__(self, vocab, hidden):
        super().__init__()
        self.vocab = vocab
        self.rnn = nn.LSTM(vocab, hidden, 1, batch_first=True, bias=False)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x, hidden=None):  # (T, 1) → (T, 1, V), as the others
        out, hidden = self.rnn(F.one_hot(x.t(), self.vocab).float(), hidden)
        return self.out(out).transpose(0, 1), hidden


class CharRNN(nn.Module):  # the most copied char-RNN tutorial's class, as it is written
    def __init__(self, tokens, n_hidden=256, n_layers=2, drop_prob=0.5, lr=0.001):
        super().__init__()
        self.drop_prob = drop_prob
        self.n_layers = n_layers
        self.n_hidden = n_hidden
        self.lr = lr
        self.chars = tokens
        self.int2char = dict(enumerate(self.chars))
        self.char2int = {ch: ii for ii, ch in self.int2char.items()}
        self.lstm = nn.LSTM(len(self.chars), n_hidden, n_layers, dropout=drop_prob, batch_first=True)
        self.dropout = nn.Dropout(drop_prob)
        self.fc = nn.Linear(n_hidden, len(self.chars))

    def forward(self, x, hidden):  # one-hot (B, T, V) → (B·T, V)
        r_output, hidden = self.lstm(x, hidden)
        out = self.dropout(r_output)
        out = out.contiguous().view(-1, self.n_hidden)
        return self.fc(out), hidden


class FromIds(nn.Module):  # what the tutorial's predict() does around CharRNN, as the others' interface
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, hidden=None):  # (T, 1) ids → (T, 1, V)
        if hidden is None:
            hidden = tuple(torch.zeros(self.net.n_layers, 1, self.net.n_hidden) for _ in range(2))
        out, hidden = self.net(F.one_hot(x.t(), len(self.net.chars)).float(), hidden)
        return out[:, None], hidden


class CharLM(nn.Module):  # a char-LM that keeps its initial state as parameters (detached: they stay zero)
    def __init__(self, vocab_size, emb, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(layers, 1, hidden))
        self.c0 = nn.Parameter(torch.zeros(layers, 1, hidden))
        self.proj = nn.Linear(hidden, vocab_size)

    def forward(self, x, hidden=None):  # (T, 1) → (T, 1, V)
        if hidden is None:
            hidden = (self.h0.detach(), self.c0.detach())
        out, hidden = self.rnn(self.emb(x.t()), hidden)
        return self.proj(out).transpose(0, 1), hidden


class Lit(nn.Module):  # a LightningModule holding the course's model as `model` (its state_dict: model.*)
    def __init__(self, model):
        super().__init__()
        self.model = model


class AttributeDict(dict):  # how older PyTorch Lightning saved hyper_parameters: a dict subclass
    pass


def lightning(model: nn.Module, hyper_parameters) -> dict:
    """What PyTorch Lightning's checkpoint connector writes for a module `Lit(model)`."""
    adam = torch.optim.Adam(model.parameters())
    return {"epoch": 2, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": Lit(model).state_dict(),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 2}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(1.25), "best_model_path": "/runs/epoch=2.ckpt",
                "dirpath": "/runs", "best_k_models": {"/runs/epoch=2.ckpt": torch.tensor(1.25)}}},
            "optimizer_states": [adam.state_dict()], "lr_schedulers": [],
            "hparams_name": "kwargs", "hyper_parameters": hyper_parameters}


class Evil:
    """Pickles as a call that would write a file, and would write one if its state were set."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code from the pickle ran"))


def course_train(model: nn.Module, ids: torch.Tensor, chunks: int = 40) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    hidden = None
    for i in range(chunks):
        x, y = ids[i * 100:(i + 1) * 100, None], ids[i * 100 + 1:(i + 1) * 100 + 1]
        out, hidden = model(x, hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = F.cross_entropy(out[:, 0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def reference(model: nn.Module, chars: list[str], text: str) -> dict:
    """The model's own greedy continuation of the text's first 12 characters, and its loss on
    the text, in torch."""
    model.eval()
    index = {c: i for i, c in enumerate(chars)}
    prompt = text[:12]
    out, hidden = model(torch.tensor([index[c] for c in prompt])[:, None])
    picked = []
    for _ in range(LENGTH):
        token = int(out[-1, 0].argmax())
        picked.append(chars[token])
        out, hidden = model(torch.tensor([[token]]), hidden)
    ids = torch.tensor([index[c] for c in text if c in index])
    logits, _ = model(ids[:-1, None])
    loss = F.cross_entropy(logits[:, 0].double(), ids[1:]).item()
    return {"prompt": prompt, "greedy": "".join(picked), "loss": loss, "text": text}


def main() -> None:
    corpus, folder = Path(sys.argv[1]), Path(sys.argv[2])
    with open(corpus, encoding="utf-8") as f:  # the course reads the text in text mode
        text = f.read()
    chars = sorted(set(text[:CHARS]))
    ids = torch.tensor([chars.index(c) for c in text[:CHARS]])
    torch.manual_seed(0)
    score_text = text[CHARS // 2: CHARS // 2 + 2000]
    refs = {}

    course = lstm(len(chars), 48, 2)
    course_train(course, ids)
    refs["course"] = reference(course, chars, score_text)
    sd = course.state_dict()
    torch.save(sd, folder / "sd.pt")
    torch.save(course, folder / "whole.pt")
    torch.save({"model": sd, "chars": chars}, folder / "dict.pt")
    torch.save({"model_state_dict": sd, "optimizer_state_dict": torch.optim.Adam(course.parameters()).state_dict(),
                "epoch": 3, "char2int": {c: i for i, c in enumerate(chars)}}, folder / "tutorial.pt")
    torch.save({f"module.{k}": v for k, v in sd.items()}, folder / "dataparallel.pt")
    torch.jit.save(torch.jit.trace(course, (ids[:5, None],)), folder / "traced.pt")
    course.evil = Evil(str(folder / "pwned.txt"))  # an attribute whose unpickling would write a file
    torch.save(course, folder / "evil.pt")
    (folder / "stoi.json").write_text(json.dumps({c: i for i, c in enumerate(chars)}))
    (folder / "chars.json").write_text(json.dumps(chars))

    wlm = RNNModel(len(chars), 40, 40, 2)
    course_train(wlm, ids, chunks=20)
    refs["wlm"] = reference(wlm, chars, score_text)
    torch.save(wlm, folder / "wlm.pt")  # what word_language_model's main.py saves
    torch.save(wlm.state_dict(), folder / "wlm_sd.pt")

    onehot = OneHot(len(chars), 32)
    course_train(onehot, ids, chunks=20)
    refs["onehot"] = reference(onehot, chars, score_text)
    torch.save(onehot.state_dict(), folder / "onehot.pt")

    tokens = tuple(set(text[:CHARS]))  # the tutorial's vocabulary: in set order, not sorted
    ids_by_token = torch.tensor([tokens.index(c) for c in text[:CHARS]])
    char_rnn = CharRNN(tokens, n_hidden=32, n_layers=2, drop_prob=0.3)
    course_train(FromIds(char_rnn), ids_by_token, chunks=20)
    refs["char_rnn"] = reference(FromIds(char_rnn), list(tokens), score_text)
    torch.save({"n_hidden": char_rnn.n_hidden, "n_layers": char_rnn.n_layers, "state_dict": char_rnn.state_dict(),
                "tokens": char_rnn.chars}, folder / "char_rnn.pt")
    torch.save(char_rnn, folder / "char_rnn_whole.pt")

    charlm = CharLM(len(chars), 16, 32, 2)
    course_train(charlm, ids, chunks=20)
    refs["charlm"] = reference(charlm, chars, score_text)
    torch.save(charlm, folder / "charlm.pt")
    eos = ["<eos>" if c == "\n" else "<space>" if c == " " else c for c in chars]
    (folder / "charlm_vocab.txt").write_text("".join(f"{token}\n" for token in eos), encoding="utf-8")
    with torch.no_grad():
        charlm.h0.normal_()  # as if its training had learned a start state
    torch.save(charlm, folder / "charlm_learned.pt")

    torch.save(lightning(course, {"vocab": chars, "hidden": 48, "layers": 2, "lr": 5e-3}), folder / "lightning.ckpt")
    torch.save(lightning(course, AttributeDict(itos=dict(enumerate(chars)), hidden=48)), folder / "lightning_old.ckpt")
    torch.save({"state_dict": sd, "chars": chars, "itos": chars[::-1], "lr": 5e-3}, folder / "two_vocabs.pt")

    refused = {
        "gru.pt": {"embedding.weight": torch.zeros(5, 4), **{k: v for k, v in nn.GRU(4, 6).state_dict().items()},
                   "fc.weight": torch.zeros(5, 6), "fc.bias": torch.zeros(5)},
        "bidirectional.pt": {"emb.weight": torch.zeros(5, 4), **nn.LSTM(4, 6, bidirectional=True).state_dict(),
                             "fc.weight": torch.zeros(5, 12)},
        "proj.pt": {"emb.weight": torch.zeros(5, 4), **nn.LSTM(4, 6, proj_size=3).state_dict(),
                    "fc.weight": torch.zeros(5, 3)},
        "two_lstms.pt": {**{f"a.{k}": v for k, v in nn.LSTM(4, 6).state_dict().items()},
                         **{f"b.{k}": v for k, v in nn.LSTM(4, 6).state_dict().items()}},
        "extra_layer.pt": {**sd, "norm.weight": torch.ones(48), "norm.bias": torch.zeros(48)},
        "hidden_buffer.pt": {**sd, "hidden": torch.rand(2, 64, 48)},  # the last batch's state, stashed
        "no_model.pt": {"epoch": 3, "notes": "hello"},
    }
    for name, content in refused.items():
        torch.save(content, folder / name)
    torch.save(nn.Sequential(nn.Embedding(5, 4), nn.GRU(4, 6)), folder / "gru_whole.pt")
    (folder / "reference.json").write_text(json.dumps(refs))


if __name__ == "__main__":
    main()
