// A mergeable latency histogram in microseconds: exact below 128 µs, then 64 buckets per power of
// two (about 1.6% resolution) up to 2^31 µs. Workers fill one each and send the counts to the
// coordinator, which merges them (percentiles of the union, not averages of percentiles).

const SUB = 64;
const LINEAR = 2 * SUB; // values below this are their own bucket
const MAX_EXP = 31;
export const HIST_BUCKETS = LINEAR + (MAX_EXP - 7) * SUB;

export interface HistData {
  counts: Uint32Array;
  n: number;
  sum: number; // µs
  max: number; // µs
}

export function newHist(): HistData {
  return { counts: new Uint32Array(HIST_BUCKETS), n: 0, sum: 0, max: 0 };
}

function bucketOf(v: number): number {
  if (v < LINEAR) return v < 0 ? 0 : v | 0;
  if (v >= 2 ** MAX_EXP) return HIST_BUCKETS - 1;
  const e = 31 - Math.clz32(v); // >= 7
  const m = v >>> (e - 6); // [64, 128)
  return LINEAR + (e - 7) * SUB + (m - SUB);
}

/** Representative value of a bucket (its middle). */
function valueOf(b: number): number {
  if (b < LINEAR) return b;
  const e = Math.floor((b - LINEAR) / SUB) + 7;
  const m = ((b - LINEAR) % SUB) + SUB;
  const lo = m * 2 ** (e - 6);
  return lo + 2 ** (e - 6) / 2;
}

export function record(h: HistData, us: number): void {
  h.counts[bucketOf(us)]++;
  h.n++;
  h.sum += us;
  if (us > h.max) h.max = us;
}

export function merge(into: HistData, from: HistData): void {
  for (let i = 0; i < HIST_BUCKETS; i++) into.counts[i] = (into.counts[i] as number) + (from.counts[i] as number);
  into.n += from.n;
  into.sum += from.sum;
  if (from.max > into.max) into.max = from.max;
}

/** Percentile p (0-100) in µs; NaN when empty. The 100th percentile is the exact maximum. */
export function percentile(h: HistData, p: number): number {
  if (!h.n) return Number.NaN;
  if (p >= 100) return h.max;
  const rank = Math.ceil((p / 100) * h.n);
  let seen = 0;
  for (let i = 0; i < HIST_BUCKETS; i++) {
    seen += h.counts[i] as number;
    if (seen >= rank) return Math.min(valueOf(i), h.max);
  }
  return h.max;
}
