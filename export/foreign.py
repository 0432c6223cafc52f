"""Models trained outside charlstm: one read of a file into a Description, then the checkpoint charlstm would have written and the conversion report.

Recognised: our checkpoint; a plain state_dict, whatever its module names and wrapper prefixes;
a dict wrapping one (PyTorch Lightning's .ckpt included); a whole pickled model
(`torch.save(model)`) and a TorchScript file, both read without running their code
(export/unpickle.py). The parts are found by tensor names and shapes (export/parts.py), the
vocabulary by what it is (export/vocabulary.py); a file that holds something else is refused
in one line that says what was found.
"""

import dataclasses
import hashlib
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.core.files import read_regular
from charlstm.export.parts import Parts, find_parts, has_recurrent
from charlstm.export.unpickle import Placeholder, is_torchscript, load_archive
from charlstm.export.vocabulary import Candidate, Vocabulary, candidates, choose, near_misses
from charlstm.train import checkpoint, safeload
from charlstm.train.checkpoint import Checkpoint

CHARLSTM = "charlstm checkpoint"
STATE_DICT, WRAPPED, PICKLED, TORCHSCRIPT = "state_dict", "dict holding a state_dict", "pickled model", "TorchScript model"
# Where people keep the state_dict in a dict, most specific first.
STATE_KEYS = ("model_state_dict", "state_dict", "model_state", "model", "net", "network", "weights", "params")
SAVE_A_STATE_DICT = "torch.save({'model': model.state_dict(), 'chars': chars}, 'model.pt')"
ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Description:
    """One read of a model file: what it is and what it holds, before anything is decided."""

    path: Path
    sha256: str  # of the bytes read, the ones described
    kind: str  # one of CHARLSTM, STATE_DICT, WRAPPED, PICKLED, TORCHSCRIPT
    ckpt: Checkpoint | None = None  # a charlstm checkpoint
    tensors: OrderedDict = field(default_factory=OrderedDict)  # a foreign model's tensors by dotted name
    classes: dict = field(default_factory=dict)  # module path -> class name, where the file names classes
    weights_at: str = ""  # the key of the dict that held the weights ("": the file itself)
    model_class: str = ""  # a pickled or TorchScript model's class
    vocabularies: tuple[Candidate, ...] = ()
    places: str = "key"  # how a vocabulary's place is named: a "key" of a dict, an "attribute" of a model


@dataclass(frozen=True)
class Foreign:
    """A model read from any recognised file, as the checkpoint charlstm would have written."""

    ckpt: Checkpoint
    kind: str
    sha256: str  # of the file's bytes, as read
    vocab: Vocabulary | None = None  # a foreign model's vocabulary and where it came from
    vocab_found: bool = True  # the vocabulary came from the file itself
    report: tuple[str, ...] = ()  # the conversion report (for a foreign file)


def read_model(path: str | Path, vocab: Vocabulary | None = None, vocab_key: str | None = None,
               max_params: int = limits.MAX_PARAMETERS) -> Foreign:
    """The model in `path`, read once; `vocab` is used where the file has none (or instead of
    its own), `vocab_key` chooses among the vocabularies it holds; a model of more than
    `max_params` weights is refused before anything of its size is built."""
    found = describe(path)
    if found.kind == CHARLSTM:
        if (vocab is not None and list(vocab.chars) != found.ckpt.vocab) or vocab_key is not None:
            raise BadInput(f"{path} is a charlstm checkpoint with its own vocabulary; drop --vocab / --vocab-corpus"
                           " / --vocab-key")
        return Foreign(found.ckpt, CHARLSTM, found.sha256)
    parts = find_parts(found.tensors, found.classes)
    parts.check_size(max_params)
    chosen = vocab or _vocabulary(found, parts.vocab_size, vocab_key)
    return Foreign(parts.checkpoint(list(chosen.chars)), found.kind, found.sha256, chosen, vocab is None,
                   conversion(found, parts, chosen))


def describe(path: str | Path) -> Description:
    """What the file at `path` holds, from one read of its bytes."""
    path = Path(path)
    data = read_regular(path, "checkpoint")
    sha256 = hashlib.sha256(data).hexdigest()
    if is_torchscript(data):
        return _of_model(path, sha256, TORCHSCRIPT, _restricted(data, path))
    content = _read(data, path)
    if isinstance(content, Placeholder) and content.items and not content.attributes:
        content = dict(content.items)  # a dict subclass (Lightning's AttributeDict, say)
    if isinstance(content, dict) and "format" in content:
        return Description(path, sha256, CHARLSTM, checkpoint.from_content(content, path))
    if isinstance(content, Placeholder):
        return _of_model(path, sha256, PICKLED, content)
    if isinstance(content, dict):
        return _of_dict(path, sha256, content)
    raise BadInput(f"{path} holds a {type(content).__name__}, not a model: save a state_dict, {SAVE_A_STATE_DICT}")


def _read(data: bytes, path: Path):
    """What torch.load(weights_only=True) reads, or, for pickled objects it will not rebuild,
    what the restricted unpickler reads; every failure is one BadInput."""
    try:
        return safeload.load(data, path)
    except BadInput:
        raise
    except RecursionError:
        raise BadInput(f"{path} nests its contents too deeply to be a model file") from None
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise BadInput(f"{path} is not a readable torch file ({checkpoint.first_sentence(str(e))})") from None
        if not data.startswith(ZIP_MAGIC):
            raise BadInput(f"{path} holds pickled objects in torch's legacy format, which charlstm does not read;"
                           f" save a state_dict instead: {SAVE_A_STATE_DICT}") from None
        return _restricted(data, path)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise BadInput(f"{path} is not a readable model file ({checkpoint.reason(data, e)})") from None


def _restricted(data: bytes, path: Path):
    safeload.check_archive(data, path)
    try:
        content = load_archive(data)
    except Exception as e:  # whatever a damaged or unknown archive makes the pickle machinery raise
        raise BadInput(f"{path} is a damaged or unknown torch archive ({type(e).__name__}: {str(e)[:80]})") from None
    safeload.check_tensors(content, path, len(data))
    return content


def _of_model(path: Path, sha256: str, kind: str, root) -> Description:
    tensors, classes = _from_module(root)
    return Description(path, sha256, kind, tensors=tensors, classes=classes, model_class=classes.get("", ""),
                       vocabularies=tuple(candidates(root)), places="attribute")


def _is_tensor_dict(d) -> bool:
    return isinstance(d, dict) and bool(d) and all(torch.is_tensor(v) for v in d.values())


def _of_dict(path: Path, sha256: str, content: dict) -> Description:
    if _is_tensor_dict(content):
        return Description(path, sha256, STATE_DICT, tensors=OrderedDict(content))
    nested = [(k, v) for k, v in content.items() if _is_tensor_dict(v) or isinstance(v, Placeholder)]
    with_rnn = [(k, v) for k, v in nested if has_recurrent(_from_module(v)[0] if isinstance(v, Placeholder) else v)]
    chosen = sorted(with_rnn, key=lambda kv: STATE_KEYS.index(kv[0]) if kv[0] in STATE_KEYS else len(STATE_KEYS))
    if not chosen:
        keys = ", ".join(map(repr, list(content)[:8]))
        raise BadInput(f"{path} holds a dict ({keys}) with no model weights in it (no LSTM weights such as"
                       f" weight_ih_l0); save a state_dict: {SAVE_A_STATE_DICT}")
    if len(chosen) > 1 and not chosen[0][0] in STATE_KEYS:
        raise BadInput(f"{path} holds several models ({', '.join(repr(k) for k, _ in chosen)}); keep one")
    key, value = chosen[0]
    vocabularies = tuple(candidates(content))
    if isinstance(value, Placeholder):
        tensors, classes = _from_module(value)
        return Description(path, sha256, PICKLED, tensors=tensors, classes=classes, weights_at=str(key),
                           model_class=classes.get("", ""), vocabularies=vocabularies)
    return Description(path, sha256, WRAPPED, tensors=OrderedDict(value), weights_at=str(key),
                       vocabularies=vocabularies)


def _from_module(root) -> tuple[OrderedDict, dict]:
    """A pickled or TorchScript module tree: its tensors by dotted name (as its state_dict
    names them) and the class of each submodule by path ("" for the model itself)."""
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
    return tensors, classes


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _class_name(qualname: str) -> str:
    """torch.nn.modules.rnn.LSTM, also from TorchScript's __torch__.torch.nn...___torch_mangle_1.LSTM."""
    return re.sub(r"\.___torch_mangle_\d+", "", qualname.removeprefix("__torch__."))


# -- the vocabulary and the report --------------------------------------------------------------
def _vocabulary(found: Description, size: int, key: str | None) -> Vocabulary:
    chosen = choose(list(found.vocabularies), size, key, found.places)
    if chosen is None:
        near = near_misses(list(found.vocabularies), size, found.places)
        raise BadInput(f"{found.path} holds no vocabulary of {size} characters{f' ({near})' if near else ''}; give it"
                       " with --vocab FILE (JSON: a list of characters in id order or a mapping either way; or text,"
                       " one character per line) or --vocab-corpus TEXT [--vocab-corpus-chars N]")
    return dataclasses.replace(chosen.vocab, origin=f"{found.places} {chosen.where!r}")


def conversion(found: Description, parts: Parts, vocab: Vocabulary) -> tuple[str, ...]:
    """What a foreign file was read as, part by part: the lines charlstm-export prints."""
    size, hidden = parts.head_weight.shape
    names, first = parts.names, parts.layers[0]
    source = f"a {found.kind}" + (f" under key {found.weights_at!r}" if found.weights_at else "")
    source += f" (class {found.model_class})" if found.model_class else ""
    embedding = (f"{names['embedding']} {tuple(parts.embedding.shape)}" if parts.embedding is not None
                 else f"none: one-hot characters ({size} inputs to the LSTM)")
    lstm = f"{names['lstm'] or 'at the top level'}, {len(parts.layers)} layers of {hidden} units,"
    lstm += f" {first['weight_ih'].shape[1]} inputs" + ("" if "bias_ih" in first else ", no biases")
    output = f"{names['output']} {tuple(parts.head_weight.shape)}"
    output += f" + {names['output bias']}" if names["output bias"] else ", no bias"
    lines = [f"read {found.path.name} as {source}", f"  embedding: {embedding}", f"  LSTM: {lstm}",
             f"  output: {output}"]
    tied = [f"{copy} is {of}" for copy, of in parts.tied]
    if parts.embedding is not None and parts.embedding.shape == parts.head_weight.shape:
        tied += [f"{names['output']} is {names['embedding']}"] if torch.equal(parts.embedding, parts.head_weight) else []
    if tied:
        lines.append(f"  tied: {', '.join(tied)}")
    if parts.start:
        lines.append(f"  initial state: {', '.join(parts.start)}: zeros, the state charlstm starts from")
    embed = parts.embedding.shape[1] if parts.embedding is not None else size
    params = limits.lstm_parameters(size, embed, hidden, len(parts.layers))
    lines += [f"  vocabulary: {vocab.describe()}",
              f"  as charlstm: vocab_size {size}, embed_dim {embed}, hidden_size {hidden}, num_layers"
              f" {len(parts.layers)} ({params:,} parameters)"]
    return tuple(lines)
