"""Embedding → LSTM → Linear among a foreign model's named tensors: which tensor is which part, and what else may be there.

Found by tensor names and shapes (and module classes, where the file names them). Besides the
three parts a model may hold second names of a tied weight and its initial state as tensors
(h0, c0, ...): all zeros is charlstm's own start and is accepted; anything else is refused by
name, because every charlstm runtime starts a text from zeros (docs/formats.md).
"""

import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.core.formats import vocab_problem
from charlstm.train import safeload
from charlstm.train.checkpoint import Checkpoint, Record
from charlstm.train.config import ModelConfig

RECURRENT = re.compile(r"^(?P<prefix>.*?)(?P<what>weight|bias)_(?P<kind>ih|hh|hr)_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}
# The last part of the name of an initial state: h0, c_0, hidden0, init_hidden, initial_c, h_init, ...
INITIAL = re.compile(r"(init(ial)?_?)?(h|c|hx|cx|hidden|cell|state|hc)(_?(0|init|initial|start|zero))?", re.IGNORECASE)


@dataclass
class Parts:
    embedding: torch.Tensor | None  # (V, E); None: the LSTM takes one-hot characters (E = V)
    layers: list[dict[str, torch.Tensor]]  # per layer: weight_ih, weight_hh, bias_ih, bias_hh
    head_weight: torch.Tensor  # (V, H)
    head_bias: torch.Tensor | None
    names: dict[str, str] = field(default_factory=dict)  # part -> the tensor or module name it came from
    tied: list[tuple[str, str]] = field(default_factory=list)  # (second name, the used tensor it repeats)
    start: list[str] = field(default_factory=list)  # zero initial states, by name and shape

    @property
    def vocab_size(self) -> int:
        return self.head_weight.shape[0]

    def check_size(self, max_params: int) -> None:
        """The caps of core/limits.py, before the one-hot table or float copies are made."""
        vocab, hidden = self.head_weight.shape
        embed = self.embedding.shape[1] if self.embedding is not None else vocab
        limits.check_shape(vocab, embed, hidden, len(self.layers), max_params)

    def checkpoint(self, vocab: list[str]) -> Checkpoint:
        size = self.vocab_size
        if len(vocab) != size:
            raise BadInput(f"the vocabulary has {len(vocab)} characters but the model has {size} (its embedding's"
                           f" rows and its output layer's outputs); give the vocabulary it was trained with")
        problem = vocab_problem(vocab)
        if problem:
            raise BadInput(f"vocabulary: {problem}")
        hidden = self.head_weight.shape[1]
        embedding = self.embedding if self.embedding is not None else torch.eye(size)
        config = ModelConfig(size, embedding.shape[1], hidden, len(self.layers), 0.0)
        sd = {"embedding.weight": embedding}
        for k, layer in enumerate(self.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                value = layer.get(name)
                sd[f"lstm.{name}_l{k}"] = value if value is not None else torch.zeros(4 * hidden)
        sd["head.weight"] = self.head_weight
        sd["head.bias"] = self.head_bias if self.head_bias is not None else torch.zeros(size)
        sd = {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}
        return Checkpoint(config, list(vocab), sd, Record())


def has_recurrent(names) -> bool:
    return any(RECURRENT.match(str(name)) for name in names)


def find_parts(tensors: OrderedDict, classes: dict) -> Parts:
    """Embedding → LSTM → Linear among named tensors (and, when known, the module classes)."""
    stacks = OrderedDict()
    for name in tensors:
        match = RECURRENT.match(name)
        if match:
            stacks.setdefault(match["prefix"].rstrip("."), []).append((name, match))
    if not stacks:
        raise BadInput("no LSTM weights found (tensors named like lstm.weight_ih_l0): charlstm exports"
                       " Embedding → LSTM → Linear models")
    if len(stacks) > 1:
        raise BadInput(f"several recurrent stacks ({', '.join(map(repr, stacks))}): charlstm exports one"
                       " Embedding → LSTM → Linear; this file is ambiguous")
    prefix, found = next(iter(stacks.items()))
    for name, match in found:
        safeload.check_weight(name, tensors[name], "the model")
        if tensors[name].dim() != (2 if match["what"] == "weight" else 1):
            raise BadInput(f"{name} has shape {tuple(tensors[name].shape)}: an LSTM's weights are matrices and its"
                           " biases vectors")
    layers, hidden, input_size = _lstm_layers(prefix, found, tensors, classes.get(prefix))
    rest = OrderedDict((k, v) for k, v in tensors.items() if not RECURRENT.match(k))
    first_rnn = list(tensors).index(found[0][0])
    head_name, head_bias = _head(rest, hidden, classes, list(tensors), first_rnn)
    size = rest[head_name].shape[0]
    embed_name = _embedding(rest, input_size, size, head_name, classes, list(tensors), first_rnn)
    used = {head_name, embed_name, head_bias} - {None}
    for name in used:
        safeload.check_weight(name, rest[name], "the model")
    tied = [(k, _tied_copy(rest, k, used)) for k in rest if k not in used]
    start = [k for k, of in tied if of is None and _initial_state(k, rest[k], len(layers), hidden)]
    unexpected = [k for k, of in tied if of is None and k not in start]
    if unexpected:
        raise BadInput(f"unexpected tensors {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}:"
                       " charlstm exports Embedding → LSTM → Linear and nothing else")
    names = {"lstm": prefix, "output": head_name, "output bias": head_bias, "embedding": embed_name}
    return Parts(rest[embed_name] if embed_name else None, layers, rest[head_name],
                 rest[head_bias] if head_bias else None, names, [(k, of) for k, of in tied if of],
                 [f"{k} {tuple(rest[k].shape)}" for k in start])


def _initial_state(name: str, t: torch.Tensor, layers: int, hidden: int) -> bool:
    """True for a zero initial state (named like one, shaped like one layer's or all layers' h
    or c, or both stacked); BadInput for a non-zero one; False for any other tensor."""
    shaped = t.dim() >= 1 and t.shape[-1] == hidden and all(d in (1, 2, layers) for d in t.shape[:-1])
    if not (INITIAL.fullmatch(name.rsplit(".", 1)[-1]) and shaped and t.numel() <= 2 * layers * hidden):
        return False
    safeload.check_weight(name, t, "the model")
    if torch.count_nonzero(t):
        largest = float(t.detach().abs().max())
        raise BadInput(f"{name} {tuple(t.shape)} is a learned initial state (not zeros: largest |value| {largest:.3g});"
                       " every charlstm runtime starts a text from zeros, so this model's own text would differ")
    return True


def _lstm_layers(prefix: str, found, tensors, cls: str | None):
    where = repr(prefix) if prefix else "the top level"
    if any(m["reverse"] for _, m in found):
        raise BadInput(f"the LSTM at {where} is bidirectional: a bidirectional LSTM reads the text backwards too,"
                       " which a left-to-right generator cannot do")
    if any(m["kind"] == "hr" for _, m in found):
        raise BadInput(f"the LSTM at {where} has proj_size (weight_hr_l0): charlstm's graph has no projection")
    by_layer: dict[int, dict] = {}
    for name, m in found:
        by_layer.setdefault(int(m["layer"]), {})[f"{m['what']}_{m['kind']}"] = tensors[name]
    count = len(by_layer)
    if sorted(by_layer) != list(range(count)) or any({"weight_ih", "weight_hh"} - set(d) for d in by_layer.values()):
        raise BadInput(f"the recurrent layers at {where} are incomplete (layers {sorted(by_layer)})")
    w_hh = by_layer[0]["weight_hh"]
    hidden = w_hh.shape[1]
    gates = w_hh.shape[0] // max(hidden, 1)
    kind = (cls or "").rsplit(".", 1)[-1] or GATES.get(gates, f"a recurrent layer with {gates} gates")
    if kind != "LSTM" or gates != 4:
        raise BadInput(f"the recurrent layer at {where} is {'a ' + kind if kind in ('GRU', 'RNN') else kind}, not an"
                       f" LSTM (weight_hh_l0 is {tuple(w_hh.shape)}): charlstm's graph holds LSTM cells only")
    for k, layer in by_layer.items():
        width = layer["weight_ih"].shape[1] if k == 0 else hidden
        shapes = {"weight_ih": (4 * hidden, width), "weight_hh": (4 * hidden, hidden), "bias_ih": (4 * hidden,),
                  "bias_hh": (4 * hidden,)}
        wrong = [f"{n}_l{k} {tuple(t.shape)}" for n, t in layer.items() if tuple(t.shape) != shapes[n]]
        if wrong:
            raise BadInput(f"the LSTM at {where} has weights of unexpected shapes: {', '.join(wrong)}")
    return [by_layer[k] for k in range(count)], hidden, by_layer[0]["weight_ih"].shape[1]


def _module(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _head(rest, hidden, classes, order, first_rnn) -> tuple[str, str | None]:
    """The output layer: a (V, hidden) weight, with its bias if it has one."""
    candidates = [k for k, v in rest.items() if k.endswith("weight") and v.dim() == 2 and v.shape[1] == hidden]
    linear = [k for k in candidates if classes.get(_module(k), "").endswith("Linear")]
    biased = [k for k in candidates if _bias_of(rest, k)]
    after = [k for k in candidates if order.index(k) > first_rnn]
    for pick in (linear, biased, after, candidates):
        if len(pick) == 1:
            return pick[0], _bias_of(rest, pick[0])
    if not candidates:
        raise BadInput(f"no output layer found: a Linear from the LSTM's {hidden} units to the vocabulary (a weight"
                       f" of shape (characters, {hidden})); charlstm exports Embedding → LSTM → Linear")
    raise BadInput(f"several tensors could be the output layer ({', '.join(candidates)}); this file is ambiguous")


def _bias_of(rest, weight: str) -> str | None:
    bias = weight[: -len("weight")] + "bias"
    return bias if bias in rest and rest[bias].shape == rest[weight].shape[:1] else None


def _embedding(rest, width, size, head, classes, order, first_rnn) -> str | None:
    """The input layer: a (V, width) table; None where the LSTM reads one-hot characters."""
    candidates = [k for k, v in rest.items() if k != head and k.endswith("weight") and v.dim() == 2
                  and v.shape[1] == width and not _bias_of(rest, k)]
    embeds = [k for k in candidates if classes.get(_module(k), "").endswith("Embedding")]
    before = [k for k in candidates if order.index(k) < first_rnn]
    pick = next((p for p in (embeds, before, candidates) if len(p) == 1), None)
    if pick is None and not candidates and width == size:
        return None  # one-hot input: the LSTM's input width is the vocabulary
    if pick is None:
        if not candidates:
            raise BadInput(f"no embedding found: a table of shape (characters, {width}) feeding the LSTM")
        raise BadInput(f"several tensors could be the embedding ({', '.join(candidates)}); this file is ambiguous")
    if rest[pick[0]].shape[0] != size:
        raise BadInput(f"the embedding {pick[0]} has {rest[pick[0]].shape[0]} rows but the output layer {head} has"
                       f" {size} outputs: not one vocabulary")
    return pick[0]


def _tied_copy(rest, name: str, used: set) -> str | None:
    """The used tensor that `name` is a second name for (weights tied by assignment, saved twice), or None."""
    return next((u for u in sorted(used) if u in rest and rest[u].shape == rest[name].shape
                 and torch.equal(rest[u], rest[name])), None)
