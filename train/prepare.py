"""Corpus preparation: a UTF-8 file read in chunks into a cached, memory-mapped file of token ids.

The text is what core.corpus.read_corpus reads (UTF-8; CRLF and CR as "\\n" unless kept; a
leading byte-order mark dropped), and the vocabulary its sorted distinct characters, so the ids
are those a whole-file read would give; but the file is read in chunks and turned into ids with
numpy, and the ids go to disk (uint8 for at most 256 characters, wider beyond), so memory does
not grow with the corpus. The cache file holds a header that names the corpus (sha256, size)
and the reading options; a cache whose header, options or size do not match is rebuilt.
"""

import codecs
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlstm.core.corpus import BOM, normalize_line_ends
from charlstm.core.errors import BadInput
from charlstm.core.files import atomic_write

CACHE_FORMAT = "charlstm-ids/1"
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
        return Path(cache_dir) / f"{sha256[:20]}.{mode}.charlstm-ids"
    return corpus.with_name(f"{corpus.name}.{mode}.charlstm-ids")


def prepare(corpus: str | Path, normalize_newlines: bool = True, cache_dir: str | Path | None = None,
            chunk: int = CHUNK) -> Prepared:
    """The corpus's ids from its cache, built first when missing, stale or damaged (reading
    `chunk` bytes at a time)."""
    corpus = Path(corpus)
    _check_file(corpus)
    sha256, size = _hash(corpus)
    if cache_dir is None and not _writable(corpus.parent):  # a read-only corpus folder: the temp folder
        cache_dir = Path(tempfile.gettempdir()) / "charlstm-cache"
        cache_dir.mkdir(exist_ok=True)
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


def _writable(folder: Path) -> bool:
    """Writable for us and meant to be: root may write anywhere, but a folder without write
    permission bits (a read-only share) is left alone."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


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
    header = json.dumps({"format": CACHE_FORMAT, **key, "vocab": vocab, "count": count, "dtype": dtype.name},
                        ensure_ascii=False).encode()
    start = _data_offset(len(header))
    with atomic_write(path) as f:
        f.write(MAGIC + struct.pack("<Q", len(header)) + header + b"\0" * (start - len(MAGIC) - 8 - len(header)))
        for text in text_chunks(corpus, normalize_newlines, chunk):
            f.write(table[_code_points(text)].tobytes())


def _data_offset(header_length: int) -> int:
    return -(-(len(MAGIC) + 8 + header_length) // ALIGN) * ALIGN


def _open(path: Path, key: dict) -> tuple[tuple[list[str], np.ndarray] | None, str]:
    """((vocab, ids), why it was not there before) when the cache is sound for `key`; else (None, why not)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 8)
            if len(head) < len(MAGIC) + 8 or head[: len(MAGIC)] != MAGIC:
                return None, "not a charlstm cache"
            (length,) = struct.unpack("<Q", head[len(MAGIC):])
            header = json.loads(f.read(min(length, 1 << 26)).decode())
    except FileNotFoundError:
        return None, "no cache yet"
    except (OSError, ValueError) as e:
        return None, f"unreadable ({type(e).__name__})"
    if header.get("format") != CACHE_FORMAT or any(header.get(k) != v for k, v in key.items()):
        return None, "made from another version of the corpus or with other options"
    dtype, start = np.dtype(header["dtype"]), _data_offset(length)
    if os.path.getsize(path) != start + header["count"] * dtype.itemsize:
        return None, "truncated"
    if header["count"] == 0:
        return (header["vocab"], np.zeros(0, dtype)), "reused"
    ids = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(header["count"],))
    return (header["vocab"], ids), "reused"
