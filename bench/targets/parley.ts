// Parley as a benchmark target: `bin/parley --config <dir>/parley.yaml start` (with N multiplexor
// processes, or --no-mux), like bench/c2s.ts. Accounts and rosters are written before the start
// through Parley's own storage API (openStorage → accounts.create with SCRAM-SHA-1 and SCRAM-SHA-256
// secrets, roster.setItem with subscription 'both'), into the SQLite database the server then opens.
//
// Made comparable with the peers (bench/targets/prosody.ts, ejabberd.ts): 127.0.0.1:<port> only,
// no direct-TLS port, PLAIN allowed without TLS, TLS not required, every rate limit lifted, no idle
// ping, logging at warn, and the same modules: roster (with presence), offline, disco, ping.
// Parley's blocking, last-activity, vCard, private storage, registration, time and version modules
// are switched off, and so are the modern-IM ones of issue 5 (archive, carbons, CSI, stream
// management, PEP, bookmarks, push, external services, avatar conversion): they hook into routed stanzas (the archive
// writes every chat message to the database) and the peers run none of them here; nor upload,
// proxy65, news channels, ad-hoc commands or alerts. MUC (issue 7) runs at conference.<domain>
// with the limits lifted for W6.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAccountJid } from '../../src/auth/index.js';
import { PARLEY_VERSION } from '../../src/modules/version.js';
import { openStorage } from '../../src/storage/index.js';
import type { AccountRecord } from '../../src/storage/types.js';
import { ServerProcess, type TargetInfo, normalizeRosters, sleep, tail, userSecrets, waitReady } from './common.js';
import type { TargetOptions } from './types.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin/parley');

/** Modules the peers do not run (see the header); `name: false` in parley.yaml. */
const DISABLED_MODULES = ['blocking', 'last', 'vcard', 'private', 'register', 'time', 'version', 'mam', 'carbons', 'csi', 'sm', 'pep', 'bookmarks', 'push', 'extdisco', 'avatars', 'upload', 'proxy65', 'news', 'adhoc', 'alerts', 'polls', 'search', 'entitlements'];

async function provision(opts: TargetOptions, dbPath: string): Promise<void> {
  const [sha1, sha256] = await Promise.all([userSecrets(opts.users, 'SHA-1'), userSecrets(opts.users, 'SHA-256')]);
  const storage = await openStorage({ type: 'sqlite', path: dbPath });
  try {
    const now = Date.now();
    const secret = (s: (typeof sha1)[number]) => ({
      salt: Buffer.from(s.salt).toString('base64'),
      iterations: s.iterations,
      storedKey: s.storedKey.toString('base64'),
      serverKey: s.serverKey.toString('base64'),
    });
    const writes: Promise<boolean>[] = [];
    for (let i = 0; i < opts.users; i++) {
      const jid = parseAccountJid(`u${i}@${opts.domain}`);
      const rec: AccountRecord = {
        jid: jid.bare,
        username: jid.local as string,
        host: jid.domain,
        scram: { 'SHA-1': secret(sha1[i] as (typeof sha1)[number]), 'SHA-256': secret(sha256[i] as (typeof sha1)[number]) },
        createdAt: now,
      };
      writes.push(storage.accounts.create(rec));
    }
    const made = await Promise.all(writes);
    if (made.some((ok) => !ok)) throw new Error('parley: some accounts already existed in a fresh database');
    const items: Promise<string>[] = [];
    for (const [user, contacts] of normalizeRosters(opts.rosters, opts.domain)) {
      for (const c of contacts) items.push(storage.roster.setItem(user, { jid: c, subscription: 'both', ask: false, approved: false, groups: [] }));
    }
    await Promise.all(items);
  } finally {
    await storage.close();
  }
}

function gitRev(): string {
  const r = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : '';
}

function configYaml(opts: TargetOptions, dataDir: string, mux: number): string {
  return [
    `hosts: [${opts.domain}]`,
    `dataDir: ${dataDir}`,
    `listen: { address: 127.0.0.1, c2s: ${opts.port}, c2sDirectTls: null }`,
    'http: { port: null, tlsPort: null }',
    // STARTTLS is always offered (with the generated self-signed EC P-256 certificate), never required.
    'tls: { required: false }',
    'auth: { allowPlainWithoutTls: true, maxFailuresPerAddress: 1000000, maxFailuresPerPair: 1000000 }',
    `mux: { count: ${mux} }`,
    'log: { level: warn }',
    // MUC limits lifted like the peers' (ejabberd: max_users 10000, no message interval); room
    // archiving off like the peers' (ejabberd mam: false, Prosody without mod_muc_mam).
    `modules: { ${DISABLED_MODULES.map((m) => `${m}: false`).join(', ')}, muc: { maxRoomsPerUser: 0, defaultMaxUsers: 1000, messagesPerSecond: 1000000, messageBurst: 1000000, archive: { enabled: false } } }`,
    'limits:',
    '  connectionsPerAddress: 1000000',
    '  preAuthPerAddress: 1000000',
    '  stanzasPerSecond: 10000000',
    '  burstStanzas: 10000000',
    '  bytesPerSecond: 1000000000',
    '  burstBytes: 1000000000',
    '  idlePingSeconds: 0',
    '  offlineQuota: 1000000',
    '  outputBufferBytes: 33554432', // 32 MiB, like Prosody's send buffer limit
    '  rosterSize: 100000',
    '',
  ].join('\n');
}

async function startParley(opts: TargetOptions, mux: number): Promise<TargetInfo> {
  const dataDir = join(opts.dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const t0 = performance.now();
  await provision(opts, join(dataDir, 'parley.sqlite'));
  const provisionMs = performance.now() - t0;
  const cfgPath = join(opts.dir, 'parley.yaml');
  writeFileSync(cfgPath, configYaml(opts, dataDir, mux));

  const logFile = join(opts.dir, 'parley.log');
  const args = ['--config', cfgPath, 'start', ...(mux === 0 ? ['--no-mux'] : [])];
  const srv = new ServerProcess(mux === 0 ? 'parley (no mux)' : 'parley', BIN, args, { cwd: opts.dir, logFile });
  let muxPids: number[] = [];
  try {
    // The banner on stdout ends with "Add a user:"; it names the mux pids.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const out = readFileSync(logFile, 'utf8');
      if (/Add a user:/.test(out)) {
        const port = /\(STARTTLS\): \S+ port (\d+)/.exec(out);
        if (!port || Number(port[1]) !== opts.port) throw new Error(`parley: unexpected banner (wanted port ${opts.port}):\n${out}`);
        const pids = /\(pids ([\d, ]+)\)/.exec(out);
        muxPids = pids ? (pids[1] as string).split(',').map((p) => Number(p.trim())) : [];
        if (muxPids.length !== mux) throw new Error(`parley: expected ${mux} mux pids, banner shows ${muxPids.join(', ') || 'none'}`);
        break;
      }
      if (srv.exited) throw new Error(`parley exited (code ${srv.exitCode}) before its banner:\n${tail(logFile)}`);
      if (Date.now() > deadline) throw new Error(`parley printed no banner in 60 s:\n${tail(logFile)}`);
      await sleep(50);
    }
    await waitReady(srv, opts, 30_000);
  } catch (err) {
    await srv.stop([opts.port]).catch(() => {});
    throw err;
  }
  const rev = gitRev();
  return {
    name: mux === 0 ? 'parley (no mux)' : mux === 1 ? 'parley' : `parley (${mux} muxes)`,
    version: `${PARLEY_VERSION}${rev ? ` (${rev})` : ''}`,
    port: opts.port,
    domain: opts.domain,
    serverPids: () => [srv.pid],
    muxPids: () => [...muxPids],
    stop: () => srv.stop([opts.port]),
    provisionMs,
    logFile,
  };
}

/** Parley with N multiplexor processes (`mux.count: N`; 0 is `start --no-mux`). */
export function parleyWithMuxes(n: number): (opts: TargetOptions) => Promise<TargetInfo> {
  return (opts) => startParley(opts, n);
}

/** Parley with one multiplexor (the default deployment). */
export const parley = (opts: TargetOptions): Promise<TargetInfo> => startParley(opts, 1);

/** Parley without multiplexor: clients connect to the server process (`parley start --no-mux`). */
export const parleyNoMux = (opts: TargetOptions): Promise<TargetInfo> => startParley(opts, 0);
