// The error a user can fix, as the Python runtime's BadInput: one line, no stack needed.

import { CONTRACT } from "./contract.mjs";

const UNSAFE = new RegExp(CONTRACT.unsafe, "gu");

/** `text` with every character a one-line message never holds raw escaped, as core/errors.py's one_line. */
export function oneLine(text) {
  return String(text).replace(UNSAFE, (ch) => {
    const code = ch.codePointAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

export class BadInput extends Error {
  constructor(message) {
    super(oneLine(message));
    this.name = "BadInput";
  }
}

/** '1 character', '2 characters', '1,000 characters' (Python's f"{n:,}"). */
export function plural(n, noun) {
  const digits = String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${digits} ${noun}${n === 1 ? "" : "s"}`;
}
