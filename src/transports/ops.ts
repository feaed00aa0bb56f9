// Operations endpoints of the web container (issue 6): /healthz (liveness), /readyz (readiness:
// storage answers, listeners bound, a mux link up when muxes are configured) and /metrics
// (Prometheus text exposition format, prom-client).
//
// Every server gets a registry of its own (never prom-client's global one), so that several servers
// in one process (tests) do not collide. Hot-path figures (stanzas, auth failures) are plain
// integers in src/core/stats.ts, read by collect() callbacks at scrape time; nothing here runs per
// stanza. Storage figures are sampled at scrape (and latency also by a periodic probe) under a
// deadline, so a stuck database slows neither a scrape nor a readiness probe beyond it.
//
// /metrics answers only to configured addresses (loopback by default; the client address is the one
// web.requestInfo() computes, so X-Forwarded-For counts only from trusted proxies) or to a request
// carrying the configured bearer token; everyone else gets 403. /healthz and /readyz are open (load
// balancers and orchestrators probe them from elsewhere) and say nothing beyond a short reason.
import { createHash, timingSafeEqual } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { addressInList, compileAddressList } from '../core/addresses.js';
import type { Server } from '../core/server.js';
import type { DirectoryStats } from '../auth/index.js';
import type { TransportKind } from '../core/transport.js';
import type { WebContainer } from './web.js';

/** What the composition root knows and the server does not: its listeners and mux links. */
export interface OpsOptions {
  /** True while every configured client listener is bound. */
  listenersUp: () => boolean;
  /** The mux link listener, if any (its live links). */
  muxLink: { status(): { name: string; connections: number }[] } | null;
  /** Muxes are configured: readiness needs at least one link up. */
  muxRequired: boolean;
}

export interface OpsEndpoints {
  readonly registry: Registry;
  /** One storage ping under the deadline (also what /readyz and the probe use). */
  pingStorage(): Promise<PingResult>;
  /** The reasons the server is not ready (empty: ready). */
  readiness(): Promise<string[]>;
  /** Stops the periodic probe. */
  close(): void;
}

export type PingResult = { ok: true; seconds: number } | { ok: false; reason: 'timeout' | 'error' };

const TRANSPORTS: readonly TransportKind[] = ['tcp', 'mux', 'websocket', 'bosh'];
// Storage round trips: sub-millisecond (SQLite) to a few hundred ms (a loaded remote PostgreSQL).
const PING_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export function startOps(server: Server, web: WebContainer, opts: OpsOptions): OpsEndpoints {
  const cfg = server.config.http.metrics;
  const storage = server.storage;
  const stats = server.stats;
  const register = new Registry();
  const registers = [register];

  // ---- storage sampling ---------------------------------------------------------------------

  const pingHist = new Histogram({
    name: 'parley_storage_ping_seconds',
    help: 'Storage round-trip time (ping), measured at scrape, by /readyz and by a periodic probe',
    buckets: PING_BUCKETS,
    registers,
  });
  const storageUp = new Gauge({ name: 'parley_storage_up', help: 'The last storage ping answered within the deadline (1) or not (0)', registers });

  // Concurrent callers (a scrape, a readiness probe, the timer) share one round trip in flight, so
  // a flood of /readyz requests costs the database one query at a time.
  let inFlight: Promise<PingResult> | null = null;
  const pingStorage = (): Promise<PingResult> => {
    inFlight ??= withDeadline(() => storage.ping(), cfg.storageTimeoutMs)
      .then((r): PingResult => {
        if (r.ok) {
          pingHist.observe(r.seconds);
          storageUp.set(1);
        } else storageUp.set(0);
        return r;
      })
      .finally(() => {
        inFlight = null;
      });
    return inFlight;
  };

  let offlineInFlight: Promise<void> | null = null;
  new Gauge({
    name: 'parley_offline_messages',
    help: 'Offline messages stored for all accounts (XEP-0160 queues); keeps its last value when storage does not answer',
    registers,
    async collect() {
      offlineInFlight ??= withDeadline(() => storage.offline.total(), cfg.storageTimeoutMs)
        .then((r) => {
          if (r.ok) this.set(r.value);
        })
        .finally(() => {
          offlineInFlight = null;
        });
      await offlineInFlight;
    },
  });
  // The ping gauge and histogram are refreshed at scrape too (an async collect awaited by prom-client).
  new Gauge({
    name: 'parley_storage_ping_last_seconds',
    help: 'Storage round-trip time of the ping made for this scrape (NaN: it failed or timed out)',
    registers,
    async collect() {
      const r = await pingStorage();
      this.set(r.ok ? r.seconds : Number.NaN);
    },
  });

  // ---- sessions, connections, stanzas, auth ------------------------------------------------

  new Gauge({
    name: 'parley_sessions',
    help: 'Bound client sessions by transport (hibernated XEP-0198 sessions count under their last transport)',
    labelNames: ['transport'] as const,
    registers,
    collect() {
      const counts: Record<TransportKind, number> = { tcp: 0, mux: 0, websocket: 0, bosh: 0 };
      for (const s of server.sessions.all()) counts[s.transport.kind]++;
      for (const t of TRANSPORTS) this.set({ transport: t }, counts[t]);
    },
  });
  new Gauge({
    name: 'parley_sessions_hibernated',
    help: 'Bound sessions without a connection, waiting for XEP-0198 resumption',
    registers,
    collect() {
      let n = 0;
      for (const s of server.sessions.all()) if (s.hibernated) n++;
      this.set(n);
    },
  });
  new Gauge({
    name: 'parley_connections',
    help: 'Open client connections (authenticated or not)',
    registers,
    collect() {
      this.set(server.connectionCount);
    },
  });
  new Counter({
    name: 'parley_stanzas_in_total',
    help: 'Stanzas received from bound client sessions, by type',
    labelNames: ['type'] as const,
    registers,
    collect() {
      this.reset();
      this.inc({ type: 'message' }, stats.messagesIn);
      this.inc({ type: 'presence' }, stats.presencesIn);
      this.inc({ type: 'iq' }, stats.iqsIn);
    },
  });
  new Counter({
    name: 'parley_stanzas_out_total',
    help: 'Stanzas sent to client sessions, by type',
    labelNames: ['type'] as const,
    registers,
    collect() {
      this.reset();
      this.inc({ type: 'message' }, stats.messagesOut);
      this.inc({ type: 'presence' }, stats.presencesOut);
      this.inc({ type: 'iq' }, stats.iqsOut);
    },
  });
  new Counter({
    name: 'parley_auth_failures_total',
    help: 'SASL failures sent to clients, by mechanism ("none": before one was chosen) and RFC 6120 condition',
    labelNames: ['mechanism', 'condition'] as const,
    registers,
    collect() {
      this.reset();
      for (const [key, n] of stats.authFailures) {
        const [mechanism = 'none', condition = ''] = key.split('\u0000');
        this.inc({ mechanism, condition }, n);
      }
    },
  });
  new Counter({
    name: 'parley_preauth_evicted_total',
    help: 'Unauthenticated connections closed to admit a newer one from the same address (quota full)',
    registers,
    collect() {
      this.reset();
      this.inc(stats.preAuthEvicted);
    },
  });

  // ---- muxes ---------------------------------------------------------------------------------

  new Gauge({
    name: 'parley_mux_links_up',
    help: 'Authenticated multiplexor links',
    registers,
    collect() {
      this.set(opts.muxLink?.status().length ?? 0);
    },
  });
  new Gauge({
    name: 'parley_mux_link_connections',
    help: 'Client connections carried by each multiplexor link',
    labelNames: ['mux'] as const,
    registers,
    collect() {
      this.reset();
      for (const l of opts.muxLink?.status() ?? []) this.set({ mux: l.name }, l.connections);
    },
  });

  // ---- directory (issue 8: hosts with LDAP accounts) ------------------------------------------

  // One per figure of LdapDirectory.stats(), by host; the counters live in the directory objects.
  const directoryFigures: { name: string; help: string; kind: 'counter' | 'gauge'; pick: (s: DirectoryStats) => number }[] = [
    { name: 'parley_directory_cache_hits_total', help: 'Directory look-ups answered from the cache', kind: 'counter', pick: (s) => s.hits },
    { name: 'parley_directory_cache_misses_total', help: 'Directory look-ups the cache could not answer', kind: 'counter', pick: (s) => s.misses },
    { name: 'parley_directory_cache_negative_hits_total', help: 'Look-ups answered by a remembered "not found"', kind: 'counter', pick: (s) => s.negativeHits },
    { name: 'parley_directory_cache_evictions_total', help: 'Cache entries dropped because the cache was full', kind: 'counter', pick: (s) => s.evictions },
    { name: 'parley_directory_cache_entries', help: 'Answers in the directory cache now', kind: 'gauge', pick: (s) => s.size },
    { name: 'parley_directory_cache_negative_entries', help: '"Not found" answers in the negative cache now', kind: 'gauge', pick: (s) => s.negativeSize },
    { name: 'parley_directory_searches_total', help: 'Searches sent to the directory', kind: 'counter', pick: (s) => s.searches },
    { name: 'parley_directory_binds_total', help: 'Binds sent to the directory (user logins and the service account)', kind: 'counter', pick: (s) => s.binds },
    { name: 'parley_directory_failures_total', help: 'Directory connection failures and timeouts', kind: 'counter', pick: (s) => s.failures },
  ];
  const directoryStats = () =>
    server.hostNames().flatMap((host) => {
      const dir = server.auth.directory(host);
      return dir ? [{ host, stats: dir.stats() }] : [];
    });
  for (const f of directoryFigures) {
    const common = { name: f.name, help: f.help, labelNames: ['host'] as const, registers };
    if (f.kind === 'counter') {
      new Counter({
        ...common,
        collect() {
          this.reset();
          for (const d of directoryStats()) this.inc({ host: d.host }, f.pick(d.stats));
        },
      });
    } else {
      new Gauge({
        ...common,
        collect() {
          this.reset();
          for (const d of directoryStats()) this.set({ host: d.host }, f.pick(d.stats));
        },
      });
    }
  }

  // Process metrics: CPU, memory, handles, GC, and event-loop lag (perf_hooks histogram).
  collectDefaultMetrics({ register, eventLoopMonitoringPrecision: 10 });

  let probe: NodeJS.Timeout | null = null;
  if (cfg.probeSeconds > 0) {
    probe = setInterval(() => void pingStorage(), cfg.probeSeconds * 1000);
    probe.unref();
  }

  // ---- readiness and access --------------------------------------------------------------------

  const readiness = async (): Promise<string[]> => {
    const reasons: string[] = [];
    if (!opts.listenersUp()) reasons.push('listeners: not listening');
    if (opts.muxRequired && (opts.muxLink?.status().length ?? 0) === 0) reasons.push('mux: no link up');
    const r = await pingStorage();
    // The reason names the check, never the driver's error text (internal detail).
    if (!r.ok) reasons.push(`storage: ${r.reason === 'timeout' ? `no answer within ${cfg.storageTimeoutMs} ms` : 'ping failed'}`);
    return reasons;
  };

  const allow = compileAddressList(cfg.allow);
  const token = cfg.token;
  const mayScrape = (req: Request): boolean => {
    const { remoteAddress } = web.requestInfo(req);
    if (addressInList(allow, remoteAddress)) return true;
    if (token === undefined) return false;
    const m = /^Bearer[ ]+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    return !!m && tokenMatches(m[1] as string, token);
  };

  const router = express.Router();
  const plain = (res: Response, status: number, text: string) => {
    res.status(status).set('Cache-Control', 'no-store').type('text/plain').send(`${text}\n`);
  };
  router.get('/healthz', (_req, res) => plain(res, 200, 'ok'));
  router.get('/readyz', async (_req, res) => {
    const reasons = await readiness();
    if (reasons.length) plain(res, 503, `not ready\n${reasons.join('\n')}`);
    else plain(res, 200, 'ready');
  });
  if (cfg.enabled) {
    router.get('/metrics', async (req, res) => {
      if (!mayScrape(req)) {
        plain(res, 403, 'forbidden');
        return;
      }
      const text = await register.metrics();
      res.status(200).set('Cache-Control', 'no-store').type(register.contentType).send(text);
    });
  }
  web.mount('/', router);

  return {
    registry: register,
    pingStorage,
    readiness,
    close() {
      if (probe) clearInterval(probe);
      probe = null;
    },
  };
}

/** Resolves whether `fn`'s promise settled in time, and its value and duration; never rejects, even if `fn` throws. */
async function withDeadline<T>(fn: () => Promise<T>, ms: number): Promise<{ ok: true; value: T; seconds: number } | { ok: false; reason: 'timeout' | 'error' }> {
  const start = process.hrtime.bigint();
  const p = Promise.resolve().then(fn);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), ms);
    timer.unref();
  });
  try {
    const v = await Promise.race([p.then((value) => ({ value })), deadline]);
    if (v === 'timeout') {
      p.catch(() => {}); // it may still reject later: not an unhandled rejection
      return { ok: false, reason: 'timeout' };
    }
    return { ok: true, value: v.value, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
  } catch {
    return { ok: false, reason: 'error' };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Constant-time bearer token comparison: both sides are hashed first, so timingSafeEqual always
 * compares 32 bytes and neither the length nor a matching prefix of the secret shows in the timing.
 */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b) && given.length > 0;
}
