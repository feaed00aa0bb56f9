// Failed-login throttling (RFC 6120 §13.11 / RFC 4422 §9 ask servers to slow down password
// guessing), shaped so that it neither locks out an office behind one address nor lets a stranger
// lock out a colleague:
//
//  - per (account, address) pair: `perPair.maxFailures` wrong credentials within the window ban
//    that pair only. The victim logs in from anywhere else; whoever typed wrong waits.
//  - per address: a ban only at a rate a guessing bot reaches and an office does not (default 100
//    wrong credentials in 10 minutes; ejabberd's mod_fail2ban bans at 20 an hour, which a large
//    office behind NAT reaches on typos alone). Addresses in `limits.trustedNetworks` (the office
//    NAT, the reverse proxy, the tunnel gateway) have their own, larger limit.
//  - per account: never a ban. Its recent failures (from every address) delay every verdict for
//    it, success and failure alike, growing with the count: guessing one account from many
//    addresses slows down, and a quick answer reveals nothing. The owner, with the right
//    password, still gets in, at most `accountDelay.maxMs` later.
//
// Only wrong credentials are recorded (the caller decides): a failed channel-binding negotiation,
// a malformed message or a directory that is down (`temporary-auth-failure`) is not guessing. A
// successful login clears its pair's count. There are no per-key timers: entries carry timestamps
// and expire lazily (or in prune()), and the table is capped, evicting the least recently updated
// key, so a flood of distinct addresses or names cannot exhaust memory.

export interface ThrottleLimits {
  maxFailures: number;
  windowMs: number;
  banMs: number;
}

export interface DelaySchedule {
  /** Failures answered without delay. */
  freeFailures: number;
  /** Delay after the free ones, doubling per further failure. */
  baseMs: number;
  /** Largest delay. */
  maxMs: number;
}

export interface LoginThrottleOptions {
  perAddress?: Partial<ThrottleLimits>;
  /** Limits for addresses for which `isTrusted` is true (office NAT, proxies, tunnel gateways). */
  trustedPerAddress?: Partial<ThrottleLimits>;
  perPair?: Partial<ThrottleLimits>;
  /** Whether an address is in a trusted network. */
  isTrusted?: (address: string) => boolean;
  /** Delay of every verdict for an account with recent failures; counted over `perPair.windowMs`. */
  accountDelay?: Partial<DelaySchedule>;
  /** Delay of a failure answer for an (untrusted) address with recent failures: slows a serial bot. */
  addressDelay?: Partial<DelaySchedule>;
  /** Most keys (addresses + pairs + accounts) tracked at once; the least recently updated go first. */
  maxKeys?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export const DEFAULT_ADDRESS_LIMITS: Readonly<ThrottleLimits> = Object.freeze({
  maxFailures: 100,
  windowMs: 10 * 60_000,
  banMs: 10 * 60_000,
});
export const DEFAULT_TRUSTED_ADDRESS_LIMITS: Readonly<ThrottleLimits> = Object.freeze({
  maxFailures: 1000,
  windowMs: 10 * 60_000,
  banMs: 10 * 60_000,
});
export const DEFAULT_PAIR_LIMITS: Readonly<ThrottleLimits> = Object.freeze({
  maxFailures: 10,
  windowMs: 15 * 60_000,
  banMs: 15 * 60_000,
});
export const DEFAULT_ACCOUNT_DELAY: Readonly<DelaySchedule> = Object.freeze({ freeFailures: 3, baseMs: 250, maxMs: 5000 });
export const DEFAULT_ADDRESS_DELAY: Readonly<DelaySchedule> = Object.freeze({ freeFailures: 10, baseMs: 250, maxMs: 4000 });
export const DEFAULT_MAX_KEYS = 100_000;

export type BanScope = 'address' | 'pair';

export interface ThrottleVerdict {
  allowed: boolean;
  retryAfterMs: number;
  /** What is banned, when not allowed. */
  scope?: BanScope;
}

interface Entry {
  failures: number;
  windowStart: number;
  bannedUntil: number; // 0 when not banned
}

const NO_BAN: ThrottleLimits = { maxFailures: Number.POSITIVE_INFINITY, windowMs: 0, banMs: 0 };

export class LoginThrottle {
  private readonly perAddress: ThrottleLimits;
  private readonly trustedPerAddress: ThrottleLimits;
  private readonly perPair: ThrottleLimits;
  private readonly accountLimits: ThrottleLimits;
  private readonly accountDelay: DelaySchedule;
  private readonly addressDelay: DelaySchedule;
  private readonly isTrusted: (address: string) => boolean;
  private readonly maxKeys: number;
  private readonly now: () => number;
  // One Map, keys prefixed by kind; Map iteration order is insertion order, and every update
  // re-inserts, so the first key is always the least recently updated one.
  private readonly entries = new Map<string, Entry>();

  constructor(opts: LoginThrottleOptions = {}) {
    this.perAddress = { ...DEFAULT_ADDRESS_LIMITS, ...opts.perAddress };
    this.trustedPerAddress = { ...DEFAULT_TRUSTED_ADDRESS_LIMITS, ...opts.trustedPerAddress };
    this.perPair = { ...DEFAULT_PAIR_LIMITS, ...opts.perPair };
    // Accounts are never banned: their counter only feeds the delay.
    this.accountLimits = { ...NO_BAN, windowMs: this.perPair.windowMs };
    this.accountDelay = { ...DEFAULT_ACCOUNT_DELAY, ...opts.accountDelay };
    this.addressDelay = { ...DEFAULT_ADDRESS_DELAY, ...opts.addressDelay };
    this.isTrusted = opts.isTrusted ?? (() => false);
    this.maxKeys = Math.max(1, opts.maxKeys ?? DEFAULT_MAX_KEYS);
    this.now = opts.now ?? Date.now;
  }

  /** Number of tracked keys. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Whether an attempt from `address` (for `account`, once known) may proceed now. Without an
   * account only the address ban is checked (at `<auth/>`, before the name is known).
   */
  check(address: string, account?: string): ThrottleVerdict {
    const now = this.now();
    let verdict: ThrottleVerdict = { allowed: true, retryAfterMs: 0 };
    for (const [key, limits, scope] of this.banKeys(address, account)) {
      const e = this.live(key, limits, now);
      if (e && e.bannedUntil > now && e.bannedUntil - now > verdict.retryAfterMs) {
        verdict = { allowed: false, retryAfterMs: e.bannedUntil - now, scope };
      }
    }
    return verdict;
  }

  /** What a refused client is told (in the SASL failure): what is banned and for how long. */
  refusalText(verdict: ThrottleVerdict): string {
    const minutes = Math.max(1, Math.ceil(verdict.retryAfterMs / 60_000));
    const when = `try again in ${minutes} minute${minutes === 1 ? '' : 's'}`;
    return verdict.scope === 'pair'
      ? `too many failed logins for this account from your address; ${when} (or from another network)`
      : `too many failed logins from your address; ${when}`;
  }

  /** Records wrong credentials (and only those). */
  fail(address: string, account?: string): void {
    const now = this.now();
    const count = (key: string, limits: ThrottleLimits) => {
      let e = this.live(key, limits, now);
      // A banned key stays banned until its deadline; more failures do not extend it, so a third
      // party cannot keep a ban going at a cheaper rate than banMs.
      if (e && e.bannedUntil > now) return;
      e ??= { failures: 0, windowStart: now, bannedUntil: 0 };
      e.failures++;
      if (e.failures >= limits.maxFailures) e.bannedUntil = now + limits.banMs;
      this.entries.delete(key);
      this.entries.set(key, e);
    };
    for (const [key, limits] of this.banKeys(address, account)) count(key, limits);
    if (account) count(accountKey(account), this.accountLimits);
    this.evict();
  }

  /**
   * Records a successful login: forgets the pair's failures. The address's count stays (an office
   * logging in does not launder a bot's failures), and so does the account's, which only delays.
   */
  succeed(address: string, account: string): void {
    this.entries.delete(pairKey(account, address));
  }

  /**
   * Delay to apply before answering an attempt for `account` from `address`, computed from the
   * failures recorded so far (call it before fail()). `failing`: the answer is a failure, which
   * an untrusted address's own failure count may slow down further.
   */
  delayFor(address: string, account: string | undefined, failing: boolean): number {
    const now = this.now();
    let delay = 0;
    if (account) {
      const e = this.live(accountKey(account), this.accountLimits, now);
      if (e) delay = scheduled(this.accountDelay, e.failures + (failing ? 1 : 0));
    }
    if (failing && !this.isTrusted(address)) {
      const e = this.live(addressKey(address), this.perAddress, now);
      delay = Math.max(delay, scheduled(this.addressDelay, (e?.failures ?? 0) + 1));
    }
    return delay;
  }

  /** Drops every expired entry; call from a periodic housekeeping task if desired. */
  prune(): number {
    const now = this.now();
    let removed = 0;
    for (const [key, e] of this.entries) {
      if (this.expired(e, this.limitsOf(key), now)) {
        this.entries.delete(key);
        removed++;
      }
    }
    return removed;
  }

  clear(): void {
    this.entries.clear();
  }

  private limitsOf(key: string): ThrottleLimits {
    if (key.startsWith('u:')) return this.accountLimits;
    if (key.startsWith('p:')) return this.perPair;
    return this.isTrusted(key.slice(2)) ? this.trustedPerAddress : this.perAddress;
  }

  private *banKeys(address: string, account?: string): Generator<[string, ThrottleLimits, BanScope]> {
    yield [addressKey(address), this.isTrusted(address) ? this.trustedPerAddress : this.perAddress, 'address'];
    if (account !== undefined && account !== '') yield [pairKey(account, address), this.perPair, 'pair'];
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

/** The delay for the `nth` failure: none for the free ones, then baseMs doubling, capped. */
function scheduled(s: DelaySchedule, nth: number): number {
  if (nth <= s.freeFailures) return 0;
  const exp = nth - s.freeFailures - 1;
  // Cap the exponent first so huge counts cannot overflow to Infinity.
  return Math.min(s.maxMs, s.baseMs * 2 ** Math.min(exp, 30));
}

function addressKey(address: string): string {
  return `a:${address}`;
}

/** Case/width variants of a name reach the same account (JID localparts are NFKC + case-folded), so they share a counter. */
function normalAccount(account: string): string {
  return account.normalize('NFKC').toLowerCase();
}

function accountKey(account: string): string {
  return `u:${normalAccount(account)}`;
}

function pairKey(account: string, address: string): string {
  return `p:${normalAccount(account)}\u0000${address}`;
}
