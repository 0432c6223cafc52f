// How the Python runtime prints numbers, paths and characters, so that the JavaScript one prints the same.

/** Python's format(x, ".{digits}f"): the decimal nearest the double, exact ties to even. */
export function pyFixed(x, digits) {
  const out = x.toFixed(digits);
  if (!Number.isFinite(x) || x === 0) return Number.isNaN(x) ? "nan" : Number.isFinite(x) ? out : (x > 0 ? "inf" : "-inf");
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const mantissa = (bits & ((1n << 52n) - 1n)) | (exponent ? 1n << 52n : 0n);
  const shift = BigInt(1075 - Math.max(exponent, 1)); // |x| = mantissa / 2^shift
  if (shift <= 0n) return out;
  const scaled = mantissa * 10n ** BigInt(digits);
  const half = 1n << (shift - 1n);
  if (scaled % (1n << shift) !== half) return out; // not a tie: toFixed is right
  const floor = scaled >> shift; // a tie: toFixed took floor + 1; Python takes the even one
  if (floor % 2n !== 0n) return out;
  const s = floor.toString().padStart(digits + 1, "0");
  const body = digits ? `${s.slice(0, -digits)}.${s.slice(-digits)}` : s;
  return (x < 0 ? "-" : "") + body;
}

/** How Python's pathlib prints a path it was given: no "." parts, no doubled or trailing slashes. */
export function pyPath(p) {
  const parts = p.split("/").filter((part) => part !== "" && part !== ".");
  return (p.startsWith("/") ? "/" : "") + parts.join("/") || ".";
}

/** Python's repr() of a string, as the Python runtime's messages show it (its quotes and the
 * escapes of line breaks, tabs, backslashes and control characters). */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const escapes = { "\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", [quote]: `\\${quote}` };
  let body = "";
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (escapes[ch] !== undefined) body += escapes[ch];
    else if (code < 0x20 || (code >= 0x7f && code <= 0xa0)) body += `\\x${code.toString(16).padStart(2, "0")}`;
    else body += ch;
  }
  return quote + body + quote;
}

/** Python's repr() of a float (as json.dumps writes it): the shortest digits that read back,
 * fixed notation for decimal exponents from -4 to 15, else d.ddde±XX; integral values end in .0. */
export function pyFloat(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "NaN" : (x > 0 ? "Infinity" : "-Infinity");
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, power] = x.toExponential().split("e");
  const exp = Number(power);
  const sign = x < 0 ? "-" : "";
  const digits = mantissa.replace("-", "").replace(".", "");
  if (exp < -4 || exp >= 16) {
    const body = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${body}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const whole = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const fraction = digits.slice(exp + 1);
  return `${sign}${whole}.${fraction || "0"}`;
}

const pyItem = (x) => (typeof x === "string" ? pyRepr(x) : x === null || x === undefined ? "None" : String(x));

/** Python's repr() of a list of strings, numbers and None: [2, 'batch', 16]. */
export function pyList(items) {
  return `[${items.map(pyItem).join(", ")}]`;
}

/** Python's repr() of a tuple of them: ('tokens', 'h_in', 'c_in'). */
export function pyTuple(items) {
  return `(${items.map(pyItem).join(", ")}${items.length === 1 ? "," : ""})`;
}
