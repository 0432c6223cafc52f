"""Models trained outside charlstm: what a file holds, its Embedding → LSTM → Linear parts, its vocabulary.

Recognised: our checkpoint; a plain state_dict, whatever its module names and wrapper prefixes;
a dict wrapping one (with the vocabulary under a usual key); a whole pickled model
(`torch.save(model)`) and a TorchScript file, both read without running their code
(export/unpickle.py). The three parts are found by tensor names and shapes; a file that holds
something else is refused in one line that says what was found.
"""

import json
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.core.formats import vocab_problem
from charlstm.export.unpickle import Placeholder, is_torchscript, load_archive
from charlstm.train import checkpoint, safeload
from charlstm.train.checkpoint import Checkpoint, Record
from charlstm.train.config import ModelConfig

CHARLSTM = "charlstm checkpoint"
STATE_DICT, WRAPPED, PICKLED, TORCHSCRIPT = "state_dict", "dict holding a state_dict", "pickled model", "TorchScript model"
# Where people keep the state_dict in a dict, most specific first, and the vocabulary.
STATE_KEYS = ("model_state_dict", "state_dict", "model_state", "model", "net", "network", "weights", "params")
VOCAB_KEYS = ("chars", "vocab", "vocabulary", "itos", "stoi", "char2int", "int2char", "char2idx", "idx2char",
              "char_to_int", "int_to_char", "char_to_idx", "idx_to_char", "char_to_ix", "ix_to_char", "alphabet")
RECURRENT = re.compile(r"^(?P<prefix>.*?)(?P<what>weight|bias)_(?P<kind>ih|hh|hr)_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
GATES = {4: "LSTM", 3: "GRU", 1: "RNN"}
SAVE_A_STATE_DICT = "torch.save({'model': model.state_dict(), 'chars': chars}, 'model.pt')"


@dataclass
class Foreign:
    """A model read from any recognised file, as the checkpoint charlstm would have written."""

    ckpt: Checkpoint
    kind: str  # one of CHARLSTM, STATE_DICT, WRAPPED, PICKLED, TORCHSCRIPT
    vocab_found: bool  # the file held its vocabulary


def read_model(path: str | Path, vocab: list[str] | None = None, max_params: int = limits.MAX_PARAMETERS) -> Foreign:
    """The model in `path`, with `vocab` (list of characters in id order) where the file has
    none, or instead of the one it has; a model of more than `max_params` weights is refused
    before anything of its size is built."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint {path} does not exist" if not path.exists() else f"{path} is not a file")
    kind, content = _load(path)
    if kind == CHARLSTM:
        ckpt = checkpoint.load(path)
        if vocab is not None and vocab != ckpt.vocab:
            raise BadInput(f"{path} is a charlstm checkpoint with its own vocabulary; drop --vocab / --vocab-corpus")
        return Foreign(ckpt, kind, True)
    tensors, classes, found_vocab = content
    parts = find_parts(tensors, classes)
    parts.check_size(max_params)
    chosen = vocab if vocab is not None else found_vocab
    if chosen is None:
        raise BadInput(f"{path} holds no vocabulary; give it with --vocab FILE (a JSON list of characters in id"
                       " order, or an object character -> id) or --vocab-corpus TEXT [--vocab-corpus-chars N]")
    return Foreign(parts.checkpoint(chosen), kind, found_vocab is not None)


def _load(path: Path):
    """(CHARLSTM, None) or (kind, (tensors, module classes, vocabulary or None))."""
    if _is_torchscript(path):
        return TORCHSCRIPT, _from_module(_restricted(path))
    try:
        content = safeload.load(path)
    except BadInput:
        raise
    except RecursionError:
        raise BadInput(f"{path} nests its contents too deeply to be a model file") from None
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise BadInput(f"{path} is not a readable torch file ({checkpoint.first_sentence(str(e))})") from None
        if not zipfile.is_zipfile(path):
            raise BadInput(f"{path} holds pickled objects in torch's legacy format, which charlstm does not read;"
                           f" save a state_dict instead: {SAVE_A_STATE_DICT}") from None
        content = _restricted(path)
    except Exception:  # torch raises many types for truncated or foreign files: say it as ours does
        checkpoint.load(path)
        raise
    if isinstance(content, dict) and "format" in content:
        return CHARLSTM, None
    if isinstance(content, Placeholder):
        return PICKLED, _from_module(content)
    if isinstance(content, dict):
        return _from_dict(path, content)
    raise BadInput(f"{path} holds a {type(content).__name__}, not a model: save a state_dict, {SAVE_A_STATE_DICT}")


def _is_torchscript(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path) and is_torchscript(path)
    except Exception:  # a damaged zip makes zipfile raise many types; torch.load will say what it is
        return False


def _restricted(path: Path):
    safeload.check_archive(path)
    try:
        content = load_archive(path)
    except Exception as e:  # whatever a damaged or unknown archive makes the pickle machinery raise
        raise BadInput(f"{path} is a damaged or unknown torch archive ({type(e).__name__}: {str(e)[:80]})") from None
    safeload.check_tensors(content, path)
    return content


def _is_tensor_dict(d) -> bool:
    return isinstance(d, dict) and bool(d) and all(torch.is_tensor(v) for v in d.values())


def _from_dict(path: Path, content: dict):
    if _is_tensor_dict(content):
        return STATE_DICT, (OrderedDict(content), {}, None)
    vocab = _vocab_in(content)
    nested = [(k, v) for k, v in content.items() if _is_tensor_dict(v) or isinstance(v, Placeholder)]
    with_rnn = [(k, v) for k, v in nested if _has_recurrent(v)]
    chosen = sorted(with_rnn, key=lambda kv: STATE_KEYS.index(kv[0]) if kv[0] in STATE_KEYS else len(STATE_KEYS))
    if not chosen:
        keys = ", ".join(map(repr, list(content)[:8]))
        raise BadInput(f"{path} holds a dict ({keys}) with no model weights in it (no LSTM weights such as"
                       f" weight_ih_l0); save a state_dict: {SAVE_A_STATE_DICT}")
    if len(chosen) > 1 and not chosen[0][0] in STATE_KEYS:
        raise BadInput(f"{path} holds several models ({', '.join(repr(k) for k, _ in chosen)}); keep one")
    key, value = chosen[0]
    if isinstance(value, Placeholder):
        tensors, classes, attr_vocab = _from_module(value)
        return PICKLED, (tensors, classes, vocab or attr_vocab)
    return WRAPPED, (OrderedDict(value), {}, vocab)


def _has_recurrent(value) -> bool:
    names = _from_module(value)[0] if isinstance(value, Placeholder) else value
    return any(RECURRENT.match(str(name)) for name in names)


def _from_module(root) -> tuple[OrderedDict, dict, list[str] | None]:
    """A pickled or TorchScript module tree: its tensors by dotted name (as its state_dict
    names them), the class of each submodule by path, and a vocabulary among its attributes."""
    if not isinstance(root, Placeholder):
        raise BadInput(f"the file holds a {type(root).__name__}, not a model")
    tensors, classes = OrderedDict(), {}
    stack, seen = [(root, "")], set()  # depth first, in the modules' order; each module once
    while stack:
        module, prefix = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        classes[prefix.rstrip(".")] = _class_name(module.qualname)
        attrs = module.attributes
        modular = isinstance(attrs.get("_modules"), dict)
        own = {**_dict(attrs.get("_parameters")), **_dict(attrs.get("_buffers"))} if modular else attrs
        for name, value in own.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{name}"] = value
        children = attrs["_modules"] if modular else attrs
        stack.extend(reversed([(child, f"{prefix}{name}.") for name, child in children.items()
                               if isinstance(child, Placeholder)]))
    return tensors, classes, _vocab_in(root.attributes)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _class_name(qualname: str) -> str:
    """torch.nn.modules.rnn.LSTM, also from TorchScript's __torch__.torch.nn...___torch_mangle_1.LSTM."""
    return re.sub(r"\.___torch_mangle_\d+", "", qualname.removeprefix("__torch__."))


# -- the vocabulary ---------------------------------------------------------------------------
def _vocab_in(d: dict) -> list[str] | None:
    for key, value in d.items():
        if isinstance(key, str) and key.lower() in VOCAB_KEYS:
            vocab = as_vocab(value)
            if vocab is not None:
                return vocab
    return None


def as_vocab(value) -> list[str] | None:
    """A vocabulary in id order from the usual forms: a list or string of characters, a
    mapping character -> id or id -> character (ids 0..V-1); None if `value` is none of them."""
    if isinstance(value, str):
        value = list(value)
    if isinstance(value, (list, tuple)):
        vocab = list(value)
    elif isinstance(value, dict) and value:
        if all(_is_id(v) for v in value.values()):  # character -> id (stoi)
            ids = {int(i): ch for ch, i in value.items()}
        elif all(_is_id(k) for k in value):  # id -> character (itos; JSON makes its keys strings)
            ids = {int(i): ch for i, ch in value.items()}
        else:
            return None
        if sorted(ids) != list(range(len(value))):
            return None
        vocab = [ids[i] for i in range(len(ids))]
    else:
        return None
    return None if vocab_problem(vocab) else vocab


def _is_id(x) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or limits.decimal(x) is not None


def vocab_from_file(path: str | Path) -> list[str]:
    """--vocab FILE: JSON, a list of characters in id order or an object character -> id."""
    _regular("--vocab", path)
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"--vocab: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadInput(f"--vocab: {path} is not a UTF-8 JSON file ({type(e).__name__})") from None
    vocab = as_vocab(value)
    if vocab is None:
        problem = vocab_problem(value) if isinstance(value, list) else "it is neither a list nor an object"
        raise BadInput(f"--vocab: {path} is not a vocabulary: {problem or 'ids are not 0..N-1'}")
    return vocab


def vocab_from_corpus(path: str | Path, chars: int | None = None) -> list[str]:
    """--vocab-corpus: the sorted distinct characters of the text's first `chars` characters,
    read as a course notebook reads it: open(path, encoding="utf-8").read() (text mode, so
    CRLF and CR become \\n; a byte-order mark is a character like any other)."""
    _regular("--vocab-corpus", path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BadInput(f"--vocab-corpus: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"--vocab-corpus: cannot read {path} as UTF-8 text ({type(e).__name__})") from None
    if chars is not None and chars < 1:
        raise BadInput("--vocab-corpus-chars must be at least 1")
    return sorted(set(text[:chars]))


def _regular(flag: str, path: str | Path) -> None:
    """A file named by a flag is read only if it is a regular file: a pipe may never end."""
    if Path(path).exists() and not Path(path).is_file():
        raise BadInput(f"{flag}: {path} is not a regular file")


# -- the three parts ----------------------------------------------------------------------------
@dataclass
class Parts:
    embedding: torch.Tensor | None  # (V, E); None: the LSTM takes one-hot characters (E = V)
    layers: list[dict[str, torch.Tensor]]  # per layer: weight_ih, weight_hh, bias_ih, bias_hh
    head_weight: torch.Tensor  # (V, H)
    head_bias: torch.Tensor | None

    def check_size(self, max_params: int) -> None:
        """The caps of core/limits.py, before the one-hot table or float copies are made."""
        vocab, hidden = self.head_weight.shape
        embed = self.embedding.shape[1] if self.embedding is not None else vocab
        limits.check_shape(vocab, embed, hidden, len(self.layers), max_params)

    def checkpoint(self, vocab: list[str]) -> Checkpoint:
        size = self.head_weight.shape[0]
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
    unexpected = [k for k in rest if k not in used and not _tied_copy(rest, k, used)]
    if unexpected:
        raise BadInput(f"unexpected tensors {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}:"
                       " charlstm exports Embedding → LSTM → Linear and nothing else")
    return Parts(rest[embed_name] if embed_name else None, layers, rest[head_name],
                 rest[head_bias] if head_bias else None)


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


def _tied_copy(rest, name: str, used: set) -> bool:
    """A second name for a tensor already used (weights tied by assignment, saved twice)."""
    return any(u in rest and rest[u].shape == rest[name].shape and torch.equal(rest[u], rest[name]) for u in used)
