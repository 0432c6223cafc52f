"""Regular expressions over a model's characters, compiled to a DFA whose masks constrain generation (docs/formats.md section 11).

runtime/js/src/regex.mjs follows the same steps; tests/golden/regex.json holds what both produce.

The subset: literals; escapes of metacharacters and \\n \\t \\r \\f \\v \\xhh \\uhhhh; `.` (any
character but a line break); classes `[...]` with ranges and `^` negation; \\d \\w \\s and their
negations (ASCII: [0-9], [A-Za-z0-9_], [ \\t\\n\\r\\f\\v]); groups `(...)`, `(?:...)`; alternation
`|`; `?`, `*`, `+`, `{m}`, `{m,}`, `{m,n}`; `^` at the very start and `$` at the very end (the
whole text always matches). Refused, each in one line: backreferences, lookaround, lazy or
possessive quantifiers, other `(?` groups, anchors elsewhere, \\b \\B \\A \\Z.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from charlstm.core.errors import BadInput

MAX_REPEAT = 1000  # the largest m or n of {m,n}
MAX_NFA = 100_000  # NFA states a pattern may expand to
MAX_DFA = 10_000  # DFA states
MAX_PATTERN = 10_000  # characters of a pattern
CLASSES = {"d": "0123456789", "w": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_",
           "s": " \t\n\r\f\v"}
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
META = set("\\.^$|?*+()[]{}-/")
UNREACHABLE = np.iinfo(np.int64).max


class _Parser:
    """Recursive descent over the pattern into a tree: ("set", ids) | ("cat", [..]) |
    ("alt", [..]) | ("rep", node, m, n or None) | ("empty",)."""

    def __init__(self, pattern: str, vocab: list[str], excluded: frozenset):
        self.p, self.i = pattern, 0
        self.vocab, self.excluded = vocab, excluded

    def fail(self, what: str):
        raise BadInput(f"--regex: {what} (at {self.i} of {self.p!r})")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def take(self) -> str:
        ch = self.p[self.i]
        self.i += 1
        return ch

    def parse(self):
        if self.peek() == "^":
            self.take()
        node = self.alternation()
        if self.peek() == "$" and self.i == len(self.p) - 1:
            self.take()
        if self.i != len(self.p):
            self.fail(f"unexpected {self.peek()!r}" if self.peek() != ")" else "unbalanced ')'")
        return node

    def alternation(self):
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.take()
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self):
        items = []
        while self.peek() not in (None, "|", ")") and not (self.peek() == "$" and self.i == len(self.p) - 1):
            items.append(self.repetition())
        return ("cat", items) if items else ("empty",)

    def repetition(self):
        node = self.atom()
        while self.peek() in ("*", "+", "?", "{"):
            ch = self.take()
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(ch) or self.braces()
            if self.peek() in ("?", "+"):
                self.fail("lazy and possessive quantifiers are not supported")
            node = ("rep", node, low, high)
        return node

    def braces(self) -> tuple[int, int | None]:
        end = self.p.find("}", self.i)
        body = self.p[self.i:end] if end >= 0 else ""
        parts = body.split(",")
        if end < 0 or len(parts) > 2 or not parts[0].isdigit() or (len(parts) == 2 and parts[1] and not parts[1].isdigit()):
            self.fail("a repetition is {m}, {m,} or {m,n}")
        self.i = end + 1
        low = int(parts[0])
        high = low if len(parts) == 1 else (int(parts[1]) if parts[1] else None)
        if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
            self.fail(f"repetitions are {{m,n}} with m <= n <= {MAX_REPEAT}")
        return low, high

    def atom(self):
        ch = self.take()
        if ch == "(":
            if self.peek() == "?":
                if self.p.startswith("?:", self.i):
                    self.i += 2
                else:
                    self.fail("lookaround and (?...) groups other than (?:...) are not supported")
            node = self.alternation()
            if self.peek() != ")":
                self.fail("unbalanced '('")
            self.take()
            return node
        if ch == "[":
            return ("set", self.bracket())
        if ch == ".":
            return ("set", self.ids(lambda c: c != "\n"))
        if ch == "\\":
            return ("set", self.escape())
        if ch in "*+?{":
            self.fail(f"nothing to repeat before {ch!r}")
        if ch in "^$":
            self.fail("^ and $ only at the very start and end: the whole text always matches")
        return ("set", self.ids(lambda c: c == ch))

    def ids(self, test) -> frozenset:
        return frozenset(i for i, c in enumerate(self.vocab) if test(c) and i not in self.excluded)

    def escape(self) -> frozenset:
        found = self.escaped()
        return found if isinstance(found, frozenset) else self.ids(lambda c: c == found)

    def escaped(self) -> str | frozenset:
        r"""After a backslash: the character it stands for, or the ids of \d \w \s (\D ...)."""
        if self.peek() is None:
            self.fail("a pattern cannot end with a backslash")
        ch = self.take()
        if ch.lower() in CLASSES:
            chars = CLASSES[ch.lower()]
            return self.ids((lambda c: c in chars) if ch.islower() else (lambda c: c not in chars))
        if ch in ESCAPES:
            return ESCAPES[ch]
        if ch in "xu":
            digits = 2 if ch == "x" else 4
            code = self.p[self.i:self.i + digits]
            if len(code) != digits or any(d not in "0123456789abcdefABCDEF" for d in code):
                self.fail(f"\\{ch} takes {digits} hexadecimal digits")
            self.i += digits
            return chr(int(code, 16))
        if ch.isdigit():
            self.fail("backreferences are not supported")
        if ch in "bBAZ":
            self.fail(f"\\{ch} is an anchor; the whole text always matches")
        if ch.isalnum():
            self.fail(f"unknown escape \\{ch}")
        return ch

    def bracket(self) -> frozenset:
        negate = self.peek() == "^"
        if negate:
            self.take()
        chosen, first = set(), True
        while True:
            if self.peek() is None:
                self.fail("unbalanced '['")
            if self.peek() == "]" and not first:
                self.take()
                break
            first = False
            start = self.class_char()
            if isinstance(start, frozenset):
                chosen |= start
                continue
            if self.peek() == "-" and self.p[self.i + 1:self.i + 2] not in ("]", ""):
                self.take()
                end = self.class_char()
                if isinstance(end, frozenset) or end < start:
                    self.fail("a range is a character, '-' and a character not before it")
                chosen |= self.ids(lambda c, a=start, b=end: a <= c <= b)
            else:
                chosen |= self.ids(lambda c, a=start: c == a)
        return self.ids(lambda c: True) - chosen if negate else frozenset(chosen)

    def class_char(self) -> str | frozenset:
        """One character of a class, or the ids of an escaped class (\\d ...)."""
        ch = self.take()
        return self.escaped() if ch == "\\" else ch


class _Nfa:
    """Thompson's construction: edges[state] = list of (ids or None for epsilon, next state)."""

    def __init__(self):
        self.edges: list[list] = []

    def state(self) -> int:
        if len(self.edges) >= MAX_NFA:
            raise BadInput(f"--regex: the pattern expands to more than {MAX_NFA:,} states")
        self.edges.append([])
        return len(self.edges) - 1

    def build(self, node) -> tuple[int, int]:
        kind = node[0]
        start, end = self.state(), self.state()
        if kind == "empty":
            self.edges[start].append((None, end))
        elif kind == "set":
            self.edges[start].append((node[1], end))
        elif kind == "cat":
            at = start
            for item in node[1]:
                s, e = self.build(item)
                self.edges[at].append((None, s))
                at = e
            self.edges[at].append((None, end))
        elif kind == "alt":
            for branch in node[1]:
                s, e = self.build(branch)
                self.edges[start].append((None, s))
                self.edges[e].append((None, end))
        else:  # rep
            _, inner, low, high = node
            at = start
            for _ in range(low):
                s, e = self.build(inner)
                self.edges[at].append((None, s))
                at = e
            if high is None:
                s, e = self.build(inner)
                self.edges[at].append((None, s))
                self.edges[e].append((None, s))
                self.edges[e].append((None, end))
            else:
                for _ in range(high - low):
                    s, e = self.build(inner)
                    self.edges[at].append((None, s))
                    self.edges[at].append((None, end))
                    at = e
            self.edges[at].append((None, end))
        return start, end

    def closure(self, states) -> frozenset:
        seen, stack = set(states), list(states)
        while stack:
            for ids, nxt in self.edges[stack.pop()]:
                if ids is None and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)


@dataclass(frozen=True)
class Dfa:
    """next[s, j]: the state after character j from state s (-1: no match can follow);
    accepting[s]; distance[s]: the fewest characters from s to an accepting state; needed,
    precomputed once, makes each step's mask one comparison."""

    pattern: str
    next: np.ndarray  # (S, V) int64
    accepting: np.ndarray  # (S,) bool
    distance: np.ndarray  # (S,) int64, UNREACHABLE where none
    needed: np.ndarray  # (S, V): characters that complete a match after drawing j in s, j included (the masks)

    def allowed(self, state, remaining: int) -> np.ndarray:
        """(V,) bool (or (B, V) for an array of states): the characters after which an
        accepting state is at most remaining - 1 away."""
        return self.needed[state] <= remaining


def compile_regex(pattern: str, vocab: list[str], excluded=frozenset()) -> Dfa:
    """The DFA of `pattern` over `vocab` but the `excluded` ids (banned characters), state 0 the
    start; BadInput for a pattern outside the subset, or one no text of these characters matches."""
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise BadInput(f"--regex: a pattern is a string of at most {MAX_PATTERN:,} characters")
    nfa = _Nfa()
    start, final = nfa.build(_Parser(pattern, vocab, frozenset(excluded)).parse())
    states, index, rows = [nfa.closure([start])], {}, []
    index[states[0]] = 0
    queue = deque([0])
    while queue:
        s = queue.popleft()
        row = np.full(len(vocab), -1, np.int64)
        moves: dict[int, set] = {}
        for q in states[s]:
            for ids, nxt in nfa.edges[q]:
                for j in ids or ():
                    moves.setdefault(j, set()).add(nxt)
        for j, targets in sorted(moves.items()):  # ids ascending: states are numbered alike in every runtime
            target = nfa.closure(targets)
            if target not in index:
                if len(states) >= MAX_DFA:
                    raise BadInput(f"--regex: the pattern needs more than {MAX_DFA:,} DFA states")
                index[target] = len(states)
                states.append(target)
                queue.append(index[target])
            row[j] = index[target]
        rows.append(row)
    table = np.stack(rows)
    accepting = np.array([final in s for s in states])
    distance = _distances(table, accepting)
    after = np.where(table >= 0, distance[np.maximum(table, 0)], UNREACHABLE)
    dfa = Dfa(pattern, table, accepting, distance, np.where(after == UNREACHABLE, UNREACHABLE, after + 1))
    if dfa.distance[0] == UNREACHABLE:
        raise BadInput(f"--regex: no text of the model's characters matches {pattern!r}")
    return dfa


def _distances(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """The fewest characters from each state to an accepting one (breadth first, backwards)."""
    distance = np.where(accepting, 0, UNREACHABLE).astype(np.int64)
    back: dict[int, list] = {}
    for s, row in enumerate(table):
        for t in set(row[row >= 0].tolist()):
            back.setdefault(t, []).append(s)
    queue = deque(np.flatnonzero(accepting).tolist())
    while queue:
        t = queue.popleft()
        for s in back.get(t, ()):
            if distance[s] == UNREACHABLE:
                distance[s] = distance[t] + 1
                queue.append(s)
    return distance


def masks(dfa: Dfa, states: np.ndarray, remaining: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """For lanes in DFA `states` (B,) with `remaining` characters left, this one included: what
    each may draw (B, V) bool, and where drawing `end` ends the text (B,) (an accepting state
    that cannot take it)."""
    allowed = dfa.allowed(states, remaining)  # a new array
    ends = dfa.accepting[states] & ~allowed[:, end]
    allowed[:, end] |= ends
    return allowed, ends


class Constraint:
    """The DFA's state in each lane of a generation, the masks it puts on the logits and where
    it lets a text end (docs/formats.md section 11). `end` is the id whose draw, in an
    accepting state that cannot take it, ends the text (the start token)."""

    def __init__(self, dfa: Dfa, lanes: int, end: int):
        self.dfa, self.end = dfa, end
        self.history = [[0] for _ in range(lanes)]  # each lane's states, one per character drawn
        self.ends = [False] * lanes  # per lane: whether drawing `end` now ends the text

    def mask(self, remaining: int) -> np.ndarray:
        """(B, V) bool: what each lane may draw with `remaining` characters left, this one included."""
        allowed, ends = masks(self.dfa, np.array([h[-1] for h in self.history]), remaining, self.end)
        self.ends = ends.tolist()
        return allowed

    def advance(self, tokens: np.ndarray) -> list[bool]:
        """Each lane's state after the id it drew under the last mask; True where it ended the text."""
        ended = [end and tok == self.end for end, tok in zip(self.ends, tokens.tolist())]
        for states, tok, stop in zip(self.history, tokens.tolist(), ended):
            states.append(states[-1] if stop else int(self.dfa.next[states[-1], tok]))
        return ended

    def can_end(self, lane: int, back: int) -> bool:
        """Whether the lane's text without its last `back` characters matches (a stop string may end it there)."""
        states = self.history[lane]
        return len(states) > back and bool(self.dfa.accepting[states[-1 - back]])
