// Failed-login throttling (RFC 6120 §13.11 / RFC 4422 §9 ask servers to slow down password
// guessing). Two independent counters: per remote address (one host guessing many accounts) and
// per account (many hosts guessing one account). Each counts failures in a fixed window opened
// by the first failure; reaching maxFailures bans the key for banMs. There are no per-key timers:
// entries carry timestamps and expire lazily (or in prune()), and the table is capped, evicting
// the least recently updated key, so a flood of distinct addresses cannot exhaust memory.

export interface ThrottleLimits {
  maxFailures: number;
  windowMs: number;
  banMs: number;
}

export interface LoginThrottleOptions {
  perAddress?: Partial<ThrottleLimits>;
  perAccount?: Partial<ThrottleLimits>;
  /** Most keys (addresses + accounts) tracked at once; the least recently updated go first. */
  maxKeys?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** Response delay schedule: no delay for the first `freeFailures` failures, then `baseMs` doubling, capped at `maxMs`. */
  delay?: Partial<{ freeFailures: number; baseMs: number; maxMs: number }>;
}

export const DEFAULT_ADDRESS_LIMITS: Readonly<ThrottleLimits> = Object.freeze({
  maxFailures: 10,
  windowMs: 5 * 60_000,
  banMs: 5 * 60_000,
});
export const DEFAULT_ACCOUNT_LIMITS: Readonly<ThrottleLimits> = Object.freeze({
  maxFailures: 5,
  windowMs: 5 * 60_000,
  banMs: 5 * 60_000,
});
export const DEFAULT_MAX_KEYS = 100_000;

interface Entry {
  failures: number;
  windowStart: number;
  bannedUntil: number; // 0 when not banned
}

export class LoginThrottle {
  private readonly perAddress: ThrottleLimits;
  private readonly perAccount: ThrottleLimits;
  private readonly maxKeys: number;
  private readonly now: () => number;
  private readonly freeFailures: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  // One Map, keys prefixed by kind; Map iteration order is insertion order, and every update
  // re-inserts, so the first key is always the least recently updated one.
  private readonly entries = new Map<string, Entry>();

  constructor(opts: LoginThrottleOptions = {}) {
    this.perAddress = { ...DEFAULT_ADDRESS_LIMITS, ...opts.perAddress };
    this.perAccount = { ...DEFAULT_ACCOUNT_LIMITS, ...opts.perAccount };
    this.maxKeys = Math.max(1, opts.maxKeys ?? DEFAULT_MAX_KEYS);
    this.now = opts.now ?? Date.now;
    this.freeFailures = opts.delay?.freeFailures ?? 2;
    this.baseDelayMs = opts.delay?.baseMs ?? 250;
    this.maxDelayMs = opts.delay?.maxMs ?? 4000;
  }

  /** Number of tracked keys (addresses and accounts). */
  get size(): number {
    return this.entries.size;
  }

  /** Whether an attempt from `address` (for `account`, when known) may proceed now. */
  check(address: string, account?: string): { allowed: boolean; retryAfterMs: number } {
    const now = this.now();
    let retryAfterMs = 0;
    for (const [key, limits] of this.keys(address, account)) {
      const e = this.live(key, limits, now);
      if (e && e.bannedUntil > now) retryAfterMs = Math.max(retryAfterMs, e.bannedUntil - now);
    }
    return { allowed: retryAfterMs === 0, retryAfterMs };
  }

  /** Records a failed attempt. */
  fail(address: string, account?: string): void {
    const now = this.now();
    for (const [key, limits] of this.keys(address, account)) {
      let e = this.live(key, limits, now);
      // A banned key stays banned until its deadline; more failures do not extend it, so a third
      // party cannot keep a victim's account locked indefinitely at a cheaper rate than banMs.
      if (e && e.bannedUntil > now) continue;
      e ??= { failures: 0, windowStart: now, bannedUntil: 0 };
      e.failures++;
      if (e.failures >= limits.maxFailures) e.bannedUntil = now + limits.banMs;
      this.entries.delete(key);
      this.entries.set(key, e);
    }
    this.evict();
  }

  /** Records a successful login: forgets the account's failures (the address's stay counted). */
  succeed(_address: string, account: string): void {
    this.entries.delete(accountKey(account));
  }

  /**
   * Delay to apply before sending the <failure/> for the attempt being failed now, computed from
   * the failures recorded so far (call it before fail()): 0 for the first `freeFailures`, then
   * `baseMs` doubling per failure up to `maxMs`. Uses the worse of the address and account counts.
   */
  delayFor(address: string, account?: string): number {
    const now = this.now();
    let prior = 0;
    for (const [key, limits] of this.keys(address, account)) {
      const e = this.live(key, limits, now);
      if (!e) continue;
      if (e.bannedUntil > now) return this.maxDelayMs;
      prior = Math.max(prior, e.failures);
    }
    const nth = prior + 1; // the failure about to be reported
    if (nth <= this.freeFailures) return 0;
    const exp = nth - this.freeFailures - 1;
    // Cap the exponent first so huge counts cannot overflow to Infinity.
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(exp, 30));
  }

  /** Drops every expired entry; call from a periodic housekeeping task if desired. */
  prune(): number {
    const now = this.now();
    let removed = 0;
    for (const [key, e] of this.entries) {
      if (this.expired(e, key.startsWith('u:') ? this.perAccount : this.perAddress, now)) {
        this.entries.delete(key);
        removed++;
      }
    }
    return removed;
  }

  clear(): void {
    this.entries.clear();
  }

  private *keys(address: string, account?: string): Generator<[string, ThrottleLimits]> {
    yield [addressKey(address), this.perAddress];
    if (account !== undefined && account !== '') yield [accountKey(account), this.perAccount];
  }

  private expired(e: Entry, limits: ThrottleLimits, now: number): boolean {
    // A ban ends with a clean slate; otherwise the window closes windowMs after the first failure.
    return e.bannedUntil > 0 ? now >= e.bannedUntil : now - e.windowStart >= limits.windowMs;
  }

  private live(key: string, limits: ThrottleLimits, now: number): Entry | undefined {
    const e = this.entries.get(key);
    if (e && this.expired(e, limits, now)) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  private evict(): void {
    while (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
  }
}

function addressKey(address: string): string {
  return `a:${address}`;
}

/** Case/width variants of a name reach the same account (JID localparts are NFKC + case-folded), so they share a counter. */
function accountKey(account: string): string {
  return `u:${account.normalize('NFKC').toLowerCase()}`;
}
