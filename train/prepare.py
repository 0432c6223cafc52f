"""Corpus preparation: a UTF-8 file read in chunks into a cached, memory-mapped file of token ids.

The text is what core.corpus.read_corpus reads (UTF-8; CRLF and CR as "\\n" unless kept; a
leading byte-order mark dropped), and the vocabulary its sorted distinct characters, so the ids
are those a whole-file read would give; but the file is read in chunks and turned into ids with
numpy, and the ids go to disk (uint8 for at most 256 characters, wider beyond), so memory does
not grow with the corpus. The cache file holds a header that names the corpus (sha256, size),
the reading options and the ids' own sha256; a cache is used only if it is this user's own
regular file, writable by no one else, and its ids match that sha256; otherwise it is rebuilt.
The cache goes beside the corpus when that folder is the user's own and no one else's to write
in, else into the user's private cache folder (user_cache_dir): never where another user of the
machine could plant a link or a cache of their own.
"""

import codecs
import contextlib
import hashlib
import json
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlstm.core.corpus import BOM, normalize_line_ends
from charlstm.core.errors import BadInput
from charlstm.core.files import CACHE_SUFFIX, atomic_write
from charlstm.core.formats import vocab_problem

CACHE_FORMAT = "charlstm-ids/2"  # /1 had no ids_sha256
MAGIC = b"charlstm-ids\n\0\0\0"  # 16 bytes, then the header's length (uint64 LE), the header, zeros, the ids
ALIGN = 64
CHUNK = 8 << 20  # bytes read at a time
CODE_POINTS = 0x110000


@dataclass(frozen=True)
class Prepared:
    """The ids of a corpus, memory-mapped from the cache file, and what they mean."""

    vocab: list[str]
    ids: np.ndarray  # (N,) uint8/uint16/uint32, read-only memory map
    sha256: str
    cache: Path
    rebuilt: str | None  # why the cache was (re)built, or None when it was reused


def cache_path(corpus: Path, normalize_newlines: bool, cache_dir: Path | None, sha256: str) -> Path:
    """Beside the corpus (corpus.txt → corpus.txt.text.charlstm-ids), or in `cache_dir`, named by
    the corpus's sha256 (several corpora share it). `text`: line ends read as \\n; `raw`: kept."""
    mode = "text" if normalize_newlines else "raw"
    if cache_dir is not None:
        return Path(cache_dir) / f"{sha256[:20]}.{mode}{CACHE_SUFFIX}"
    return corpus.with_name(f"{corpus.name}.{mode}{CACHE_SUFFIX}")


def prepare(corpus: str | Path, normalize_newlines: bool = True, cache_dir: str | Path | None = None,
            chunk: int = CHUNK) -> Prepared:
    """The corpus's ids from its cache, built first when missing, stale or damaged (reading
    `chunk` bytes at a time)."""
    corpus = Path(corpus)
    _check_file(corpus)
    sha256, size = _hash(corpus)
    if cache_dir is None and not _own_folder(corpus.parent):
        cache_dir = user_cache_dir()
    path = cache_path(corpus, normalize_newlines, cache_dir and Path(cache_dir), sha256)
    key = {"corpus_sha256": sha256, "corpus_bytes": size, "normalize_newlines": normalize_newlines}
    found, why = _open(path, key)
    if found is not None:
        return Prepared(*found, sha256, path, None)
    vocab, count = _vocabulary(corpus, normalize_newlines, chunk)
    _write(corpus, path, key, vocab, count, normalize_newlines, chunk)
    found, problem = _open(path, key)
    if found is None:
        raise BadInput(f"the corpus cache {path} could not be read back ({problem})")
    return Prepared(*found, sha256, path, why)


def _own_folder(folder: Path) -> bool:
    """Ours to write in and no one else's: owned by this user, with its write bit (root may
    write anywhere, but a folder without one, a read-only share, is left alone), not writable
    by its group or others."""
    info = folder.stat()
    return info.st_uid == os.geteuid() and info.st_mode & 0o200 != 0 and info.st_mode & 0o022 == 0 and os.access(
        folder, os.W_OK)


def user_cache_dir() -> Path:
    """This user's private folder for caches: $XDG_CACHE_HOME/charlstm, else ~/.cache/charlstm,
    else (no usable home) charlstm-UID in the temp folder; made with mode 0700 and used only if
    it is a real folder (not a link) that this user owns and no one else may write in."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    candidates = [Path(xdg) / "charlstm"] if os.path.isabs(xdg) else []
    with contextlib.suppress(RuntimeError, KeyError):  # no home directory
        candidates.append(Path.home() / ".cache" / "charlstm")
    candidates.append(Path(tempfile.gettempdir()) / f"charlstm-{os.geteuid()}")
    for folder in candidates:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            info = os.lstat(folder)
        except OSError:
            continue  # a read-only home, say: the next place
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise BadInput(f"the cache folder {folder} is not this user's private folder (a link, another user's, or"
                           " writable by others); remove it, or give --cache-dir")
        if os.access(folder, os.W_OK):
            return folder
    raise BadInput("no folder to cache the corpus's ids in (home and temp folders are not writable); give --cache-dir")


def _check_file(corpus: Path) -> None:
    if not corpus.exists():
        raise BadInput(f"corpus {corpus} does not exist")
    if not corpus.is_file():
        raise BadInput(f"corpus {corpus} is not a file")
    if corpus.stat().st_size == 0:
        raise BadInput(f"corpus {corpus} is empty")


def _hash(corpus: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(corpus, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def text_chunks(corpus: Path, normalize_newlines: bool, chunk: int = CHUNK):
    """The corpus's text, chunk by chunk, as read_corpus reads it whole: decoded across chunk
    edges, a CR at a chunk's end held back until the next chunk says whether an LF follows."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, held, first = 0, "", True
    with open(corpus, "rb") as f:
        while True:
            raw = f.read(chunk)
            last = len(raw) < chunk
            if b"\x00" in raw:
                raise BadInput(f"corpus {corpus} looks binary (it contains NUL bytes); give a UTF-8 text file")
            pending = len(decoder.getstate()[0])
            try:
                text = held + decoder.decode(raw, final=last)
            except UnicodeDecodeError as e:
                where = offset - pending + e.start
                byte = (decoder.getstate()[0] + raw)[e.start] if e.start < pending + len(raw) else 0
                raise BadInput(f"corpus {corpus} is not UTF-8 (byte {byte:#04x} at offset {where});"
                               " convert it first, e.g. iconv -f latin1 -t utf-8") from None
            offset += len(raw)
            if first and text:  # the first character decoded: a byte-order mark is not text
                text, first = text.removeprefix(BOM), False
            held = ""
            if normalize_newlines and not last and text.endswith("\r"):
                text, held = text[:-1], "\r"
            yield normalize_line_ends(text) if normalize_newlines else text
            if last:
                return


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _vocabulary(corpus: Path, normalize_newlines: bool, chunk: int) -> tuple[list[str], int]:
    """The sorted distinct characters, and how many characters the text has."""
    present, count = np.zeros(CODE_POINTS, dtype=bool), 0
    for text in text_chunks(corpus, normalize_newlines, chunk):
        present[_code_points(text)] = True
        count += len(text)
    return [chr(c) for c in np.flatnonzero(present)], count


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def _write(corpus: Path, path: Path, key: dict, vocab: list[str], count: int, normalize_newlines: bool,
           chunk: int) -> None:
    """The cache file, written atomically: magic, header, ids."""
    dtype = id_dtype(len(vocab))
    table = np.zeros(CODE_POINTS, dtype=dtype)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=dtype)
    fields = {"format": CACHE_FORMAT, **key, "vocab": vocab, "count": count, "dtype": dtype.name,
              "ids_sha256": "0" * 64}  # the real one, of the same length, once the ids are written
    header = json.dumps(fields, ensure_ascii=False).encode()
    start = _data_offset(len(header))
    digest = hashlib.sha256()
    with atomic_write(path, follow_links=False) as f:
        f.write(b"\0" * start)
        for text in text_chunks(corpus, normalize_newlines, chunk):
            ids = table[_code_points(text)].tobytes()
            digest.update(ids)
            f.write(ids)
        header = json.dumps({**fields, "ids_sha256": digest.hexdigest()}, ensure_ascii=False).encode()
        f.seek(0)
        f.write(MAGIC + struct.pack("<Q", len(header)) + header)


def _data_offset(header_length: int) -> int:
    return -(-(len(MAGIC) + 8 + header_length) // ALIGN) * ALIGN


OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC
MAX_HEADER = 1 << 26  # a vocabulary of every code point, as JSON, fits


def _open(path: Path, key: dict) -> tuple[tuple[list[str], np.ndarray] | None, str]:
    """((vocab, ids), why it was not there before) when the cache is sound for `key`; else (None, why not).
    Sound: this user's own regular file (not a link), writable by no one else, whose header names
    the corpus and options and whose ids are what the header says (their sha256, each below the
    vocabulary's size)."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return None, "no cache yet"
    except OSError as e:
        return None, f"unusable ({os.strerror(e.errno)})"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None, "not this user's own file"
        try:
            header, start = _header(f)
            vocab, dtype, count = header["vocab"], np.dtype(header["dtype"]), header["count"]
        except NotACache as e:
            return None, str(e)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            return None, f"unreadable ({type(e).__name__})"
        if header.get("format") != CACHE_FORMAT or any(header.get(k) != v for k, v in key.items()):
            return None, "made from another version of the corpus, with other options or by an older charlstm"
        if not isinstance(count, int) or vocab_problem(vocab) or vocab != sorted(vocab) or dtype != id_dtype(len(vocab)):
            return None, "damaged (its header)"
        if info.st_size != start + count * dtype.itemsize:
            return None, "truncated"
        ids = np.memmap(f, dtype=dtype, mode="r", offset=start, shape=(count,)) if count else np.zeros(0, dtype)
        if not _ids_match(ids, len(vocab), header.get("ids_sha256")):
            return None, "damaged (its ids)"
    return (vocab, ids), "reused"


class NotACache(ValueError):
    """A file where a cache belongs that is not one; the message says why."""


def _header(f) -> tuple[dict, int]:
    head = f.read(len(MAGIC) + 8)
    if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
        raise NotACache("not a charlstm cache")
    (length,) = struct.unpack("<Q", head[len(MAGIC):])
    if length > MAX_HEADER:
        raise NotACache("damaged (its header)")
    header = json.loads(f.read(length).decode())
    if not isinstance(header, dict):
        raise NotACache("damaged (its header)")
    return header, _data_offset(length)


def _ids_match(ids: np.ndarray, vocab_size: int, sha256) -> bool:
    """The ids hash to `sha256` and each is below `vocab_size`, read once, a chunk at a time."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), CHUNK):
        part = ids[start : start + CHUNK]
        digest.update(part)
        if part.max() >= vocab_size:
            return False
    return digest.hexdigest() == sha256
