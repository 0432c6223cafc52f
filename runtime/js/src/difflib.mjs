// Python's difflib.get_close_matches, which click uses to suggest an option for a mistyped one.

/** Characters of `a` and `b` that difflib's SequenceMatcher(None, a, b) pairs up (no junk: its
 * autojunk starts at 200 characters, longer than any option). */
function matches(a, b) {
  const where = new Map();
  [...b].forEach((ch, j) => where.set(ch, [...(where.get(ch) || []), j]));
  const queue = [[0, a.length, 0, b.length]];
  let total = 0;
  while (queue.length) {
    const [alo, ahi, blo, bhi] = queue.pop();
    let [besti, bestj, best] = [alo, blo, 0];
    let lengths = new Map(); // j → length of the match ending at a[i - 1], b[j]
    for (let i = alo; i < ahi; i++) {
      const next = new Map();
      for (const j of where.get(a[i]) || []) {
        if (j < blo) continue;
        if (j >= bhi) break;
        const k = (lengths.get(j - 1) || 0) + 1;
        next.set(j, k);
        if (k > best) [besti, bestj, best] = [i - k + 1, j - k + 1, k];
      }
      lengths = next;
    }
    if (!best) continue;
    total += best;
    if (alo < besti && blo < bestj) queue.push([alo, besti, blo, bestj]);
    if (besti + best < ahi && bestj + best < bhi) queue.push([besti + best, ahi, bestj + best, bhi]);
  }
  return total;
}

/** get_close_matches(word, possibilities, n=3, cutoff=0.6): the best by ratio, then by name, both
 * from the largest. */
export function closeMatches(word, possibilities, n = 3, cutoff = 0.6) {
  const scored = possibilities
    .map((x) => [(2.0 * matches(x, word)) / (x.length + word.length), x])
    .filter(([ratio]) => ratio >= cutoff);
  scored.sort(([r1, x1], [r2, x2]) => r2 - r1 || (x2 > x1 ? 1 : x2 < x1 ? -1 : 0));
  return scored.slice(0, n).map(([, x]) => x);
}
