// The portable random number generator of the runtime spec (docs/formats.md): SplitMix64.

const GAMMA = 0x9e3779b97f4a7c15n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;
export const SEED_LIMIT = 1n << 64n;

/** One stream: state = seed mod 2^64; each draw advances it and mixes it into 64 bits. */
export class SplitMix64 {
  constructor(seed) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  /** The next 64-bit output, a BigInt. */
  next() {
    this.state = BigInt.asUintN(64, this.state + GAMMA);
    let z = this.state;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * MIX1);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * MIX2);
    return z ^ (z >> 31n);
  }

  /** The next double in [0, 1): the output's top 53 bits times 2^-53. */
  uniform() {
    return Number(this.next() >> 11n) * 2 ** -53;
  }
}

/** The seeding rule: sample i of a batch uses seed + i (mod 2^64). */
export function laneSeeds(seed, numSamples) {
  return Array.from({ length: numSamples }, (_, i) => BigInt.asUintN(64, BigInt(seed) + BigInt(i)));
}
