// Regular expressions over a model's characters, compiled to a DFA whose masks constrain
// generation (docs/formats.md section 11), as the Python runtime's regex.py does: the same
// subset, the same refusals, the same states.

import { BadInput } from "./errors.mjs";
import { pyRepr } from "./pyformat.mjs";

const MAX_REPEAT = 1000;
const MAX_NFA = 100000;
const MAX_DFA = 10000;
const MAX_PATTERN = 10000;
const CLASSES = { d: "0123456789", w: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", s: " \t\n\r\f\v" };
const ESCAPES = { n: "\n", t: "\t", r: "\r", f: "\f", v: "\v" };
export const UNREACHABLE = Number.MAX_SAFE_INTEGER;

class Parser {
  constructor(pattern, vocab, excluded) {
    this.p = [...pattern]; // code points, as Python indexes a str
    this.i = 0;
    this.vocab = vocab;
    this.excluded = excluded;
  }

  fail(what) {
    throw new BadInput(`--regex: ${what} (at ${this.i} of ${pyRepr(this.p.join(""))})`);
  }

  peek() { return this.i < this.p.length ? this.p[this.i] : null; }

  take() { return this.p[this.i++]; }

  atEnd$() { return this.peek() === "$" && this.i === this.p.length - 1; }

  parse() {
    if (this.peek() === "^") this.take();
    const node = this.alternation();
    if (this.atEnd$()) this.take();
    if (this.i !== this.p.length) this.fail(this.peek() !== ")" ? `unexpected ${pyRepr(this.peek())}` : "unbalanced ')'");
    return node;
  }

  alternation() {
    const branches = [this.concatenation()];
    while (this.peek() === "|") {
      this.take();
      branches.push(this.concatenation());
    }
    return branches.length === 1 ? branches[0] : ["alt", branches];
  }

  concatenation() {
    const items = [];
    while (![null, "|", ")"].includes(this.peek()) && !this.atEnd$()) items.push(this.repetition());
    return items.length ? ["cat", items] : ["empty"];
  }

  repetition() {
    let node = this.atom();
    while (["*", "+", "?", "{"].includes(this.peek())) {
      const ch = this.take();
      const [low, high] = { "*": [0, null], "+": [1, null], "?": [0, 1] }[ch] ?? this.braces();
      if (this.peek() === "?" || this.peek() === "+") this.fail("lazy and possessive quantifiers are not supported");
      node = ["rep", node, low, high];
    }
    return node;
  }

  braces() {
    const end = this.p.indexOf("}", this.i);
    const body = end >= 0 ? this.p.slice(this.i, end).join("") : "";
    const parts = body.split(",");
    const digits = (s) => /^[0-9]+$/.test(s);
    if (end < 0 || parts.length > 2 || !digits(parts[0]) || (parts.length === 2 && parts[1] && !digits(parts[1]))) {
      this.fail("a repetition is {m}, {m,} or {m,n}");
    }
    this.i = end + 1;
    const low = Number(parts[0]);
    const high = parts.length === 1 ? low : (parts[1] ? Number(parts[1]) : null);
    if (low > MAX_REPEAT || (high !== null && (high > MAX_REPEAT || high < low))) {
      this.fail(`repetitions are {m,n} with m <= n <= ${MAX_REPEAT}`);
    }
    return [low, high];
  }

  atom() {
    const ch = this.take();
    if (ch === "(") {
      if (this.peek() === "?") {
        if (this.p[this.i + 1] === ":") this.i += 2;
        else this.fail("lookaround and (?...) groups other than (?:...) are not supported");
      }
      const node = this.alternation();
      if (this.peek() !== ")") this.fail("unbalanced '('");
      this.take();
      return node;
    }
    if (ch === "[") return ["set", this.bracket()];
    if (ch === ".") return ["set", this.ids((c) => c !== "\n")];
    if (ch === "\\") return ["set", this.escape()];
    if ("*+?{".includes(ch)) this.fail(`nothing to repeat before ${pyRepr(ch)}`);
    if ("^$".includes(ch)) this.fail("^ and $ only at the very start and end: the whole text always matches");
    return ["set", this.ids((c) => c === ch)];
  }

  ids(test) {
    const out = new Set();
    this.vocab.forEach((c, i) => { if (test(c) && !this.excluded.has(i)) out.add(i); });
    return out;
  }

  escape() {
    const found = this.escaped();
    return found instanceof Set ? found : this.ids((c) => c === found);
  }

  /** After a backslash: the character it stands for, or the ids of \d \w \s (\D ...). */
  escaped() {
    if (this.peek() === null) this.fail("a pattern cannot end with a backslash");
    const ch = this.take();
    if ("dwsDWS".includes(ch)) {
      const lower = ch.toLowerCase();
      const chars = CLASSES[lower];
      return this.ids(ch === lower ? (c) => chars.includes(c) : (c) => !chars.includes(c));
    }
    if (ch in ESCAPES) return ESCAPES[ch];
    if (ch === "x" || ch === "u") {
      const digits = ch === "x" ? 2 : 4;
      const code = this.p.slice(this.i, this.i + digits).join("");
      if (code.length !== digits || !/^[0-9a-fA-F]+$/.test(code)) this.fail(`\\${ch} takes ${digits} hexadecimal digits`);
      this.i += digits;
      return String.fromCodePoint(parseInt(code, 16));
    }
    if (/^\p{Nd}$/u.test(ch)) this.fail("backreferences are not supported");
    if ("bBAZ".includes(ch)) this.fail(`\\${ch} is an anchor; the whole text always matches`);
    if (/^[\p{L}\p{N}]$/u.test(ch)) this.fail(`unknown escape \\${ch}`);
    return ch;
  }

  bracket() {
    const negate = this.peek() === "^";
    if (negate) this.take();
    const chosen = new Set();
    let first = true;
    for (;;) {
      if (this.peek() === null) this.fail("unbalanced '['");
      if (this.peek() === "]" && !first) {
        this.take();
        break;
      }
      first = false;
      const start = this.classChar();
      if (start instanceof Set) {
        for (const id of start) chosen.add(id);
        continue;
      }
      const after = this.p[this.i + 1];
      if (this.peek() === "-" && after !== "]" && after !== undefined) {
        this.take();
        const end = this.classChar();
        if (end instanceof Set || end.codePointAt(0) < start.codePointAt(0)) {
          this.fail("a range is a character, '-' and a character not before it");
        }
        for (const id of this.ids((c) => c.codePointAt(0) >= start.codePointAt(0) && c.codePointAt(0) <= end.codePointAt(0))) {
          chosen.add(id);
        }
      } else {
        for (const id of this.ids((c) => c === start)) chosen.add(id);
      }
    }
    if (!negate) return chosen;
    return new Set([...this.ids(() => true)].filter((id) => !chosen.has(id)));
  }

  classChar() {
    const ch = this.take();
    return ch === "\\" ? this.escaped() : ch;
  }
}

/** Thompson's construction: edges[state] = [[ids or null for epsilon, next state]]. */
class Nfa {
  constructor() { this.edges = []; }

  state() {
    if (this.edges.length >= MAX_NFA) throw new BadInput(`--regex: the pattern expands to more than ${MAX_NFA.toLocaleString("en-US")} states`);
    this.edges.push([]);
    return this.edges.length - 1;
  }

  build(node) {
    const [kind] = node;
    const start = this.state();
    const end = this.state();
    const link = (a, b) => this.edges[a].push([null, b]);
    if (kind === "empty") link(start, end);
    else if (kind === "set") this.edges[start].push([node[1], end]);
    else if (kind === "cat") {
      let at = start;
      for (const item of node[1]) {
        const [s, e] = this.build(item);
        link(at, s);
        at = e;
      }
      link(at, end);
    } else if (kind === "alt") {
      for (const branch of node[1]) {
        const [s, e] = this.build(branch);
        link(start, s);
        link(e, end);
      }
    } else {
      const [, inner, low, high] = node;
      let at = start;
      for (let k = 0; k < low; k++) {
        const [s, e] = this.build(inner);
        link(at, s);
        at = e;
      }
      if (high === null) {
        const [s, e] = this.build(inner);
        link(at, s);
        link(e, s);
        link(e, end);
      } else {
        for (let k = 0; k < high - low; k++) {
          const [s, e] = this.build(inner);
          link(at, s);
          link(at, end);
          at = e;
        }
      }
      link(at, end);
    }
    return [start, end];
  }

  closure(states) {
    const seen = new Set(states);
    const stack = [...states];
    while (stack.length) {
      for (const [ids, next] of this.edges[stack.pop()]) {
        if (ids === null && !seen.has(next)) {
          seen.add(next);
          stack.push(next);
        }
      }
    }
    return seen;
  }
}

/** The DFA of `pattern` over `vocab` but the `excluded` ids: { next: Int32Array rows (S x V, -1:
 * none), accepting, distance, states }; state 0 is the start. */
export function compileRegex(pattern, vocab, excluded = new Set()) {
  if (typeof pattern !== "string" || [...pattern].length > MAX_PATTERN) {
    throw new BadInput(`--regex: a pattern is a string of at most ${MAX_PATTERN.toLocaleString("en-US")} characters`);
  }
  const nfa = new Nfa();
  const [start, final] = nfa.build(new Parser(pattern, vocab, excluded).parse());
  const key = (set) => [...set].sort((a, b) => a - b).join(",");
  const states = [nfa.closure([start])];
  const index = new Map([[key(states[0]), 0]]);
  const rows = [];
  for (let s = 0; s < states.length; s++) { // breadth first: states are numbered as Python numbers them
    const row = new Int32Array(vocab.length).fill(-1);
    const moves = new Map();
    for (const q of states[s]) {
      for (const [ids, next] of nfa.edges[q]) {
        for (const j of ids ?? []) {
          if (!moves.has(j)) moves.set(j, new Set());
          moves.get(j).add(next);
        }
      }
    }
    for (const [j, targets] of [...moves].sort((a, b) => a[0] - b[0])) { // ids ascending, as regex.py
      const target = nfa.closure([...targets]);
      const k = key(target);
      if (!index.has(k)) {
        if (states.length >= MAX_DFA) throw new BadInput(`--regex: the pattern needs more than ${MAX_DFA.toLocaleString("en-US")} DFA states`);
        index.set(k, states.length);
        states.push(target);
      }
      row[j] = index.get(k);
    }
    rows.push(row);
  }
  const accepting = states.map((set) => set.has(final));
  const dfa = { next: rows, accepting, distance: distances(rows, accepting) };
  if (dfa.distance[0] === UNREACHABLE) {
    throw new BadInput(`--regex: no text of the model's characters matches ${pyRepr(pattern)}`);
  }
  return dfa;
}

function distances(rows, accepting) {
  const distance = accepting.map((a) => (a ? 0 : UNREACHABLE));
  const back = rows.map(() => []);
  rows.forEach((row, s) => { for (const t of new Set(row)) if (t >= 0) back[t].push(s); });
  const queue = accepting.flatMap((a, s) => (a ? [s] : []));
  for (let q = 0; q < queue.length; q++) {
    const t = queue[q];
    for (const s of back[t]) {
      if (distance[s] === UNREACHABLE) {
        distance[s] = distance[t] + 1;
        queue.push(s);
      }
    }
  }
  return distance;
}

/** The characters that may be drawn in `state` with `remaining` characters left (this one included). */
export function allowed(dfa, state, remaining) {
  const row = dfa.next[state];
  return Array.from(row, (t) => t >= 0 && dfa.distance[t] <= remaining - 1);
}

/** For a lane in DFA `state` with `remaining` characters left, this one included: what it may
 * draw, and whether drawing `end` ends the text (an accepting state that cannot take it). */
export function mask(dfa, state, remaining, end) {
  const ok = allowed(dfa, state, remaining);
  const ends = dfa.accepting[state] && !ok[end];
  ok[end] ||= ends;
  return [ok, ends];
}

/** The DFA's state in each lane of a generation, its masks and where it lets a text end. */
export class Constraint {
  constructor(dfa, lanes, end) {
    this.dfa = dfa;
    this.end = end;
    this.history = Array.from({ length: lanes }, () => [0]);
    this.ends = Array(lanes).fill(false);
  }

  /** What lane b may draw with `remaining` characters left. */
  mask(b, remaining) {
    const states = this.history[b];
    const [ok, ends] = mask(this.dfa, states[states.length - 1], remaining, this.end);
    this.ends[b] = ends;
    return ok;
  }

  /** Lane b's state after the id it drew under its last mask; true where that ended the text. */
  advance(b, tok) {
    const states = this.history[b];
    const stop = this.ends[b] && tok === this.end;
    states.push(stop ? states[states.length - 1] : this.dfa.next[states[states.length - 1]][tok]);
    return stop;
  }

  canEnd(b, back) {
    const states = this.history[b];
    return states.length > back && this.dfa.accepting[states[states.length - 1 - back]];
  }
}
