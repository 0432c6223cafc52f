// The error a user can fix, as the Python runtime's BadInput: one line, no stack needed.

export class BadInput extends Error {
  constructor(message) {
    super(message);
    this.name = "BadInput";
  }
}

/** '1 character', '2 characters', '1,000 characters' (Python's f"{n:,}"). */
export function plural(n, noun) {
  const digits = String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${digits} ${noun}${n === 1 ? "" : "s"}`;
}
