"""Reading a torch file from a stranger: sizes checked before torch unpacks it, tensors checked before anything copies them.

torch.load(weights_only=True) runs no code, but a small file can still ask for much memory:
a zip entry deflated from gigabytes of zeros, or a tensor whose strides repeat one number
over billions of elements (a view that any copy turns into real memory). Both are refused
here, with the caps of core/limits.py, for every torch file charlstm reads.
"""

import io
import warnings
import zipfile
from pathlib import Path

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput

MAX_OBJECTS = 1_000_000  # containers and values looked at in one file


def check_archive(data: bytes, path: Path) -> None:
    """BadInput if a zip (torch.save's container) says it unpacks to far more than its size.
    Files that are not zips pass: torch decides what they are."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
        return
    if unpacked > limits.unpack_cap(len(data)):
        raise BadInput(f"{path} says it unpacks to {unpacked:,} bytes from {len(data):,}: torch files are"
                       " stored, not compressed, so this is not one charlstm reads")


def load(data: bytes, path: Path):
    """torch.load(weights_only=True) of a file's bytes after check_archive, every tensor then
    checked (check_tensor). Raises what torch raises for files it cannot read."""
    check_archive(data, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on pickle protocols: our messages say enough
        content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    check_tensors(content, path, len(data))
    return content


def check_tensors(content, path: Path, size: int) -> None:
    """BadInput for any tensor within `content` (dicts, lists, tuples, objects' attributes as
    placeholders give them) that check_tensor refuses, or for tensors of more bytes than a file
    of `size` bytes holds; looks at MAX_OBJECTS things at most."""
    stack, seen, total = [content], set(), 0
    cap = limits.unpack_cap(size)
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if len(seen) > MAX_OBJECTS:
            raise BadInput(f"{path} holds more than {MAX_OBJECTS:,} objects; it is not a model file")
        if torch.is_tensor(value):
            check_tensor(value, path)
            total += value.numel() * value.element_size()
            if total > cap:  # views that share their data, many times over
                raise BadInput(f"{path} holds tensors of {total:,} bytes or more from a file of {size:,};"
                               " it is not a model file charlstm reads")
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif hasattr(value, "contents"):  # export/unpickle.py's placeholders
            stack.extend(value.contents)


def check_tensor(t: torch.Tensor, path: Path) -> None:
    """A dense CPU tensor of real numbers whose elements all have their own storage."""
    problem = ("a sparse tensor" if t.layout != torch.strided else "a tensor without data (meta)" if t.is_meta else
               "a complex tensor" if t.is_complex() else None)
    if problem is None and t.numel() * t.element_size() > t.untyped_storage().nbytes():
        problem = (f"a tensor of {t.numel():,} elements over {t.untyped_storage().nbytes():,} bytes (strides that"
                   " repeat its data, which a copy would make real)")
    if problem:
        raise BadInput(f"{path} holds {problem}; charlstm reads dense tensors of real numbers only")


def check_weight(name: str, t, path_or_what) -> None:
    """A model weight: a floating-point tensor (an integer or boolean one is not a weight)."""
    if not torch.is_tensor(t) or not t.is_floating_point():
        kind = t.dtype if torch.is_tensor(t) else type(t).__name__
        raise BadInput(f"{path_or_what}: {name} is {kind}, not a floating-point tensor of weights")
