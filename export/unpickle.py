"""Reading a torch.save or TorchScript archive without running any of its code: tensors, containers, inert placeholders.

A pickle names functions and classes that the unpickler calls while it reads. Here only a
few are resolved — ordered dicts, torch.Size, and our own rebuilders of tensors, which read
the raw storages of the archive — and every other name becomes a Placeholder: an inert
object that records what it stands for and the state the pickle gives it, and never runs
the class's or the function's code (no __reduce__ callable, no __setstate__, no __init__).
"""

import collections
import io
import pickle
import zipfile

import torch

# torch.save names typed storages "torch.FloatStorage" and so on.
STORAGE_DTYPES = {"DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}


class Placeholder:
    """What an unresolved class or function of a pickle became: its name, the arguments it was
    called with and the state it was given, and nothing else."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):  # also what pickle's NEWOBJ calls, which skips __init__
        self = super().__new__(cls)
        self.args, self.state = args, None
        self.items, self.elements = {}, []  # what a dict or list subclass's pickle put in it
        return self

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __call__(self, *args, **kwargs):  # what a placeholder function returned, called in turn
        return Placeholder(*args)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"

    @property
    def attributes(self) -> dict:
        """The object's attributes as the pickle gave them (a module's __dict__)."""
        state = self.state[0] if isinstance(self.state, tuple) and self.state else self.state
        return state if isinstance(state, dict) else {}

    @property
    def contents(self) -> list:
        """Everything the pickle put in the object: attributes, items, elements, arguments."""
        return [self.attributes, self.items, self.elements, list(self.args)]


def _placeholder_class(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"qualname": f"{module}.{name}", "__module__": "charlstm.export.unpickle"})


def _tensor(storage: torch.Tensor, offset: int, size, stride, *rest) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2, on a flat tensor standing for the storage: a view,
    which torch refuses if it reaches past the storage (train/safeload.py checks the rest)."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _parameter(data, *rest):
    """torch._utils._rebuild_parameter(_with_state): the tensor is all we need."""
    return data


def _same(obj, *rest):
    """TorchScript's pickle helpers that only tag or wrap what they are given."""
    return obj


SAFE = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch.jit._pickle", "restore_type_tag"): _same,
    ("torch.jit._pickle", "build_tensorlist"): _same,
    ("torch.jit._pickle", "build_intlist"): _same,
    ("torch.jit._pickle", "build_doublelist"): _same,
    ("torch.jit._pickle", "build_boollist"): _same,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE:
            return SAFE[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        return _placeholder_class(module, name)

    def persistent_load(self, pid):
        """('storage', dtype, key, location, numel): the raw bytes of data/<key> in the archive."""
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.60}")
        dtype, key = pid[1], str(pid[2])
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def load_archive(data: bytes):
    """The object a torch.save (zip format) or torch.jit.save file holds, read safely from its
    bytes. Raises zipfile.BadZipFile, KeyError or pickle.UnpicklingError for other files."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        prefix = pkl.rsplit("/", 1)[0]
        return _Unpickler(archive.read(pkl), archive, prefix).load()


def is_torchscript(data: bytes) -> bool:
    """A zip holding a TorchScript archive (its constants.pkl); False for anything else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in archive.namelist())
    except Exception:  # a damaged zip makes zipfile raise many types; torch.load will say what it is
        return False
