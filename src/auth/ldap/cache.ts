// The directory cache (issue 8): answers from LDAP are kept for a time to live (aging), the least
// recently used entries go when the cache is full (expiration), and "not found" answers live in a
// separate negative cache with their own, shorter, time to live, so a typo storm cannot push real
// users out. Counters feed /metrics.
export interface CacheStats {
  hits: number;
  misses: number;
  negativeHits: number;
  evictions: number;
  size: number;
  negativeSize: number;
}

interface Slot<V> {
  value: V;
  expires: number;
}

/** A time-to-live LRU map (Map iteration order is insertion order: re-inserting marks use). */
class TtlLru<V> {
  private readonly map = new Map<string, Slot<V>>();
  evictions = 0;

  constructor(
    private ttlMs: number,
    private readonly max: number,
    private readonly now: () => number,
  ) {}

  get(key: string): V | undefined {
    const slot = this.map.get(key);
    if (!slot) return undefined;
    this.map.delete(key);
    if (slot.expires <= this.now()) return undefined;
    this.map.set(key, slot);
    return slot.value;
  }

  set(key: string, value: V): void {
    if (this.ttlMs <= 0) return;
    this.map.delete(key);
    this.map.set(key, { value, expires: this.now() + this.ttlMs });
    while (this.map.size > this.max) {
      const oldest = this.map.keys().next().value as string;
      this.map.delete(oldest);
      this.evictions++;
    }
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

export class DirectoryCache<V> {
  private readonly positive: TtlLru<V>;
  private readonly negative: TtlLru<true>;
  private hits = 0;
  private misses = 0;
  private negativeHits = 0;

  constructor(opts: { ttlSeconds: number; negativeTtlSeconds: number; maxEntries: number }, now: () => number = Date.now) {
    this.positive = new TtlLru(opts.ttlSeconds * 1000, opts.maxEntries, now);
    this.negative = new TtlLru(opts.negativeTtlSeconds * 1000, Math.max(1, Math.ceil(opts.maxEntries / 4)), now);
  }

  /** The cached answer: a value, null for a remembered "not found", undefined when the directory must be asked. */
  get(key: string): V | null | undefined {
    const v = this.positive.get(key);
    if (v !== undefined) {
      this.hits++;
      return v;
    }
    if (this.negative.get(key)) {
      this.negativeHits++;
      return null;
    }
    this.misses++;
    return undefined;
  }

  set(key: string, value: V | null): void {
    if (value === null) {
      this.positive.delete(key);
      this.negative.set(key, true);
    } else {
      this.negative.delete(key);
      this.positive.set(key, value);
    }
  }

  delete(key: string): void {
    this.positive.delete(key);
    this.negative.delete(key);
  }

  /** `parley cache flush`: everything is asked again. */
  clear(): void {
    this.positive.clear();
    this.negative.clear();
  }

  stats(): CacheStats {
    return {
      hits: this.hits,
      misses: this.misses,
      negativeHits: this.negativeHits,
      evictions: this.positive.evictions + this.negative.evictions,
      size: this.positive.size,
      negativeSize: this.negative.size,
    };
  }
}
