"""The vocabulary of a model trained elsewhere: its forms, the tokens that stand for one character, where a file keeps it.

A vocabulary is found by what it is, not by what it is called: any value in the file that is a
sequence of distinct single characters (list, tuple, string) or a mapping character <-> id
(either direction) is a candidate, and one of the model's size is used. Names that say
"vocabulary" rank first (NAMED); several different candidates are an error that lists them
and `--vocab-key` chooses.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.core import limits
from charlstm.core.errors import BadInput
from charlstm.core.files import read_regular
from charlstm.core.formats import vocab_problem
from charlstm.export.unpickle import Placeholder

# The names people give a vocabulary (the last part of its key, any case): they rank first.
NAMED = re.compile(r"char|vocab|token|itos|stoi|alphabet|symbol|letter|ix_to|to_ix|i2c|c2i", re.IGNORECASE)
# Multi-character tokens that stand for one character by a wide convention (word-LM corpora's
# <eos> for the line break, escapes spelt out); compared without case.
CONVENTIONS = {"<eos>": "\n", "<eol>": "\n", "\\n": "\n", "<space>": " ", "<sp>": " ", "\\t": "\t", "\\r": "\r",
               "\\\\": "\\"}
IN_ID_ORDER, CHAR_TO_ID, ID_TO_CHAR = "in id order", "from a mapping character -> id", "from a mapping id -> character"
MAX_LOOKED_AT = 100_000  # values looked at when searching a file for its vocabulary
BOM = "\ufeff"


@dataclass(frozen=True)
class Vocabulary:
    """Characters in id order, where they came from, and the conventional tokens mapped."""

    chars: tuple[str, ...]
    origin: str  # "key 'tokens'", "--vocab chars.txt", ...
    form: str = IN_ID_ORDER
    mapped: tuple[tuple[str, str], ...] = ()  # (token, character) pairs applied

    def describe(self) -> str:
        """'key 'tokens', 83 characters in id order; mapped '<eos>' -> '\\n'' (the stderr line)."""
        mapped = ", ".join(f"{token!r} -> {char!r}" for token, char in self.mapped)
        return f"{self.origin}, {len(self.chars)} characters {self.form}" + (f"; mapped {mapped}" if mapped else "")


@dataclass(frozen=True)
class Candidate:
    """A value in a file that is a vocabulary, and where: `where` is its dotted key path."""

    where: str
    vocab: Vocabulary
    named: bool = field(default=False)  # its name says it is a vocabulary


# -- forms --------------------------------------------------------------------------------------
def as_vocab(value, origin: str = "the vocabulary") -> Vocabulary | None:
    """A vocabulary from the usual forms: a list, tuple or string of characters in id order, a
    mapping character -> id or id -> character (ids 0..V-1, as ints or decimal strings); tokens
    of CONVENTIONS mapped. None if `value` is none of these or not a valid vocabulary."""
    tokens, form = _tokens(value)
    if tokens is None:
        return None
    chars, mapped = standardize(tokens)
    return None if vocab_problem(chars) else Vocabulary(tuple(chars), origin, form, mapped)


def _tokens(value) -> tuple[list | None, str]:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > limits.MAX_VOCAB:
        return None, ""  # longer than any vocabulary: never copied (a file's long string stays a string)
    if isinstance(value, str):
        return list(value), IN_ID_ORDER
    if isinstance(value, (list, tuple)):
        return list(value), IN_ID_ORDER
    if not isinstance(value, dict) or not value:
        return None, ""
    if all(_is_id(v) for v in value.values()):
        ids, form = {int(i): token for token, i in value.items()}, CHAR_TO_ID
    elif all(_is_id(k) for k in value):
        ids, form = {int(i): token for i, token in value.items()}, ID_TO_CHAR
    else:
        return None, ""
    if sorted(ids) != list(range(len(value))):
        return None, ""
    return [ids[i] for i in range(len(ids))], form


def _is_id(x) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or limits.decimal(x) is not None


def standardize(tokens: list) -> tuple[list, tuple[tuple[str, str], ...]]:
    """The tokens with those of CONVENTIONS replaced by their character, and what was replaced."""
    chars, mapped = [], {}
    for token in tokens:
        char = CONVENTIONS.get(token.lower()) if isinstance(token, str) and len(token) > 1 else None
        if char is not None:
            mapped[token] = char
        chars.append(token if char is None else char)
    return chars, tuple(mapped.items())


def problem(value) -> str:
    """Why a value given as a vocabulary is not one, in words a user can act on."""
    tokens, _ = _tokens(value)
    if tokens is None:
        return "it is neither a list of characters nor a mapping character <-> id with ids 0..N-1"
    chars, _ = standardize(tokens)
    found = vocab_problem(chars)
    if found and "not a single character" in found:
        conventions = ", ".join(CONVENTIONS)
        return f"{found} (tokens charlstm maps to one character: {conventions}); write that character in its place"
    return found or "it is not a vocabulary"


# -- in a file -----------------------------------------------------------------------------------
def candidates(content) -> list[Candidate]:
    """Every vocabulary among the values of what a file holds: dicts' values, objects'
    attributes and items, the elements of lists, depth first in the file's order; torch's own
    objects are not searched."""
    found, stack, seen = [], [(content, "")], set()
    while stack and len(seen) < MAX_LOOKED_AT:
        value, where = stack.pop()
        if id(value) in seen or torch.is_tensor(value):
            continue
        seen.add(id(value))
        vocab = as_vocab(value, "") if where and _plausible(value, where) else None
        if vocab is not None:
            found.append(Candidate(where, vocab, bool(NAMED.search(where.rsplit(".", 1)[-1]))))
            continue
        stack.extend(reversed(_children(value, where)))
    return found


def _plausible(value, where: str) -> bool:
    """A string under a name that does not say "vocabulary" counts only in code-point order
    (''.join(sorted(set(text)))): a model's name or a path may be distinct characters too."""
    return not isinstance(value, str) or bool(NAMED.search(where.rsplit(".", 1)[-1])) or list(value) == sorted(value)


def _children(value, where: str) -> list:
    prefix = f"{where}." if where else ""
    if isinstance(value, Placeholder):
        if value.qualname.startswith("torch."):
            return []  # torch's modules and objects: their strings are settings ('LSTM', names of weights)
        entries = {**value.attributes, **value.items}
        modules = entries.pop("_modules", None)
        if isinstance(modules, dict):
            entries.update(modules)  # a module's children, by the attribute names its code uses
        return [(v, f"{prefix}{k}") for k, v in entries.items() if isinstance(k, str)]
    if isinstance(value, dict):
        return [(v, f"{prefix}{k}") for k, v in value.items() if isinstance(k, (str, int))]
    if isinstance(value, (list, tuple)):  # containers in lists (a list of strings is no vocabulary's home)
        return [(v, f"{where}[{i}]") for i, v in enumerate(value) if isinstance(v, (dict, list, tuple, Placeholder))]
    return []


def choose(found: list[Candidate], size: int, key: str | None, what: str) -> Candidate | None:
    """The candidate of `size` characters to use: the one at `key` (its dotted path or the last
    part of it), else the only vocabulary among the named candidates, else among all; None if
    there is none; several different ones are an error listing them. `what` is "key" or
    "attribute", for messages."""
    if key is not None:
        return _at_key(found, size, key, what)
    fitting = [c for c in found if len(c.vocab.chars) == size]
    tier = [c for c in fitting if c.named] or fitting
    different = []
    for c in tier:
        if all(c.vocab.chars != d.vocab.chars for d in different):
            different.append(c)
    if len(different) > 1:
        listed = "; ".join(f"{what} {c.where!r} ({_preview(c.vocab.chars)})" for c in different[:4])
        raise BadInput(f"the file holds {len(different)} different vocabularies of {size} characters: {listed};"
                       " choose one with --vocab-key NAME")
    return tier[0] if tier else None


def _at_key(found: list[Candidate], size: int, key: str, what: str) -> Candidate:
    at = [c for c in found if c.where == key] or [c for c in found if c.where.rsplit(".", 1)[-1] == key]
    if not at:
        listed = ", ".join(repr(c.where) for c in found[:8]) or "none"
        raise BadInput(f"--vocab-key {key!r}: the file holds no vocabulary there (vocabularies found: {listed})")
    if len({c.where for c in at}) > 1:
        raise BadInput(f"--vocab-key {key!r} names several values ({', '.join(repr(c.where) for c in at)});"
                       " give the whole dotted path")
    if len(at[0].vocab.chars) != size:
        raise BadInput(f"--vocab-key {key!r}: {what} {at[0].where!r} holds {len(at[0].vocab.chars)} characters but"
                       f" the model has {size}")
    return at[0]


def near_misses(found: list[Candidate], size: int, what: str) -> str:
    """The named candidates of another size, for the message that says none fits."""
    other = [c for c in found if c.named and len(c.vocab.chars) != size]
    return "; ".join(f"{what} {c.where!r} holds {len(c.vocab.chars)}" for c in other[:4])


def _preview(chars: tuple[str, ...]) -> str:
    return "".join(chars[:12]).encode("unicode_escape").decode("ascii") + ("..." if len(chars) > 12 else "")


# -- given by the user -----------------------------------------------------------------------------
def vocab_from_file(path: str | Path) -> Vocabulary:
    """--vocab FILE: JSON (a list of characters in id order, or a mapping either way), or text
    with one character per line in id order, a line break written as \\n (or a token of
    CONVENTIONS)."""
    data = read_regular(path, "--vocab:")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"--vocab: {path} is not UTF-8 text") from None
    origin = f"--vocab {Path(path).name}"
    try:
        value = json.loads(text.removeprefix(BOM))
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, (list, dict)):
        value = _lines(text, path)
    vocab = as_vocab(value, origin)
    if vocab is None:
        raise BadInput(f"--vocab: {path} is not a vocabulary: {problem(value)}")
    return vocab


def _lines(text: str, path) -> list[str]:
    """A text vocabulary's entries: one per line; CRLF line ends are line ends; a byte-order
    mark before the first line's character is the file's encoding mark, not a character."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's line end
    if lines and all(line.endswith("\r") for line in lines):
        lines = [line[:-1] for line in lines]
    if lines and lines[0].startswith(BOM) and len(lines[0]) > 1:
        lines[0] = lines[0][1:]
    empty = next((i for i, line in enumerate(lines, 1) if line == ""), None)
    if empty is not None or not lines:
        raise BadInput(f"--vocab: {path} line {empty or 1} is empty: a text vocabulary has one character per line,"
                       " a line break written as \\n")
    return lines


def vocab_from_corpus(path: str | Path, chars: int | None = None) -> Vocabulary:
    """--vocab-corpus: the sorted distinct characters of the text's first `chars` characters,
    read as a course notebook reads it: open(path, encoding="utf-8").read() (text mode, so
    CRLF and CR become \\n; a byte-order mark is a character like any other)."""
    if chars is not None and chars < 1:
        raise BadInput("--vocab-corpus-chars must be at least 1")
    data = read_regular(path, "--vocab-corpus:")
    try:
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError:
        raise BadInput(f"--vocab-corpus: cannot read {path} as UTF-8 text") from None
    chars_note = f", its first {chars:,} characters" if chars is not None else ""
    return Vocabulary(tuple(sorted(set(text[:chars]))), f"--vocab-corpus {Path(path).name}{chars_note}",
                      "in code-point order")
