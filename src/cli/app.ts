// Composition root: builds storage, the server, its modules and listeners from a configuration.
// Used by `parley start` and by tests that run a server in-process.
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { ensurePrivateDataDir } from './datadir.js';
import net from 'node:net';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { isLocalLink, unixSocketPath } from '../core/addresses.js';
import { muxLinkEncrypted, type ResolvedConfig } from '../core/config.js';
import { createLogger, type Logger } from '../core/logger.js';
import { Server } from '../core/server.js';
import { loadTlsMaterial, type LocalCa } from '../core/tls.js';
import { openStorage } from '../storage/index.js';
import type { Storage } from '../storage/types.js';
import { listenC2S, type C2SListener } from '../transports/tcp.js';
import { builtinModules } from '../modules/index.js';
import { MuxLinkServer } from '../transports/mux-link.js';
import { startWebContainer, type WebContainer } from '../transports/web.js';
import { startOps, type OpsEndpoints } from '../transports/ops.js';
import { startBosh, type BoshService } from '../transports/bosh.js';
import { startHostMeta, startWebSocket, type WebSocketService } from '../transports/websocket.js';
import { readPem } from '../mux/link-tls.js';
import { MuxSupervisor } from './muxes.js';
import { fileSecret, muxSecret } from './secrets.js';
import { startAccessFiles, ACL_STATUS_FILE, type FileAccessControl } from '../auth/index.js';
import type { SsoService } from '../auth/sso/index.js';
import type { Jid } from '../xmpp/jid.js';

export interface RunningParley {
  server: Server;
  storage: Storage;
  /** Bound ports (useful when the configuration asked for port 0). */
  ports: { c2s: number | null; c2sDirectTls: number | null; http: number | null; https: number | null };
  certPath: string;
  /** The generated local CA that signed the default certificate (null: configured or pre-CA certificate). */
  ca: LocalCa | null;
  /** The mux link listener and the embedded muxes, when clients go through muxes. */
  muxLink: MuxLinkServer | null;
  muxes: MuxSupervisor | null;
  /** The web container (BOSH, WebSocket, module routes, static files), when an HTTP port is on. */
  web: WebContainer | null;
  /** The access control files in force (issue 7); `acl.reload()` re-reads them (SIGHUP, `parley reload`). */
  acl: FileAccessControl;
  /** Single sign-on (issue 9), when identity providers are configured. */
  sso: SsoService | null;
  /** `parley cache flush` (SIGUSR2): empties every directory cache; reported in dataDir/cache-status.json when statusFile is on. */
  flushDirectoryCaches(reason: string): CacheFlushReport;
  stop(): Promise<void>;
}

/** The file (in dataDir) where the running server reports each directory cache flush. */
export const CACHE_STATUS_FILE = 'cache-status.json';

export interface CacheFlushReport {
  pid: number;
  /** Counts flushes since start. */
  generation: number;
  at: string;
  reason: string;
  /** Hosts with a directory, and the entries each cache dropped. */
  hosts: { host: string; entries: number }[];
}

export async function openConfiguredStorage(config: Readonly<ResolvedConfig>): Promise<Storage> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const s = config.storage;
  if (s.type === 'sqlite') return openStorage({ type: 'sqlite', path: s.path as string });
  return openStorage(s);
}

export interface StartOptions {
  log?: Logger;
  statusFile?: boolean;
  /** Clients connect to the server process directly (`parley start --no-mux`). */
  noMux?: boolean;
}

export async function startParley(config: Readonly<ResolvedConfig>, opts: StartOptions = {}): Promise<RunningParley> {
  const log = opts.log ?? createLogger({ level: config.log.level });
  ensurePrivateDataDir(config.dataDir, log);
  const tls = await loadTlsMaterial(config);
  if (tls.generated) log.info({ cert: tls.certPath, ca: tls.ca?.path, caFingerprint: tls.ca?.fingerprint256 }, 'generated a server certificate signed by the local CA');
  const storage = await openConfiguredStorage(config);
  const server = new Server({ config, storage, log, secret: fileSecret(config.dataDir, 'secret.key'), modules: builtinModules });
  const listeners: C2SListener[] = [];
  let muxLink: MuxLinkServer | null = null;
  let muxes: MuxSupervisor | null = null;
  let web: WebContainer | null = null;
  let ops: OpsEndpoints | null = null;
  let websocket: WebSocketService | null = null;
  let bosh: BoshService | null = null;
  const useMux = !opts.noMux && config.mux.count > 0;
  let acl: FileAccessControl | null = null;
  let sso: SsoService | null = null;
  try {
    // Single sign-on (issue 9): browser sign-in, then XMPP tokens; IdP groups count in the policy.
    if (config.sso.providers.length) {
      // Loaded only when configured: the SAML and OpenID libraries are large.
      const { SsoService } = await import('../auth/sso/index.js');
      sso = new SsoService({
        config,
        storage,
        accounts: server.auth,
        secret: server.secret,
        log,
        invalidateAccount: (bare) => server.invalidateAccount(bare),
        remoteAddress: (req) => web?.requestInfo(req).remoteAddress ?? req.socket.remoteAddress ?? 'unknown',
        tokensRevoked: (ids) => void server.endSessionsWithCredentials(ids),
      });
      await sso.start();
    }
    // Access control files (issue 7), in force before any module runs; a malformed one stops the start.
    // Directory groups (issue 8) are @group principals too: resolved at login, then read from the directory's group cache.
    const directoryGroups = config.hosts.some((h) => h.accounts === 'ldap' && h.ldap?.groups);
    // Groups from IdP claims (issue 9) too: kept with the identity binding, refreshed at each login.
    const groupsOf = (who: Jid): Iterable<string> | undefined => {
      if (!who.local) return undefined;
      const fromDirectory = directoryGroups ? server.auth.directory(who.domain)?.knownGroups(who.local) : undefined;
      const fromIdp = sso?.groups.of(who.bare);
      if (!fromIdp?.length) return fromDirectory;
      return fromDirectory ? [...fromDirectory, ...fromIdp] : fromIdp;
    };
    acl = await startAccessFiles({
      config,
      isLocal: (d) => server.isLocalHost(d),
      log,
      statusPath: opts.statusFile ? join(config.dataDir, ACL_STATUS_FILE) : undefined,
      groupResolver: directoryGroups || sso ? (who) => groupsOf(who) : undefined,
    });
    server.acl = acl;
    // The ACL engine is synchronous: have the user's groups (directory, IdP) ready before their first request.
    if (directoryGroups || sso) {
      const s = sso;
      server.hooks.on(
        'session.bound',
        async ({ session }) => {
          const jid = session.jid;
          if (!jid?.local) return;
          const dir = directoryGroups ? server.auth.directory(jid.domain) : undefined;
          await Promise.all([
            dir?.groups ? dir.groupsOf(jid.local).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'directory groups not resolved at login')) : undefined,
            s?.hasProviders(jid.domain) ? s.groups.refresh(jid.bare).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'IdP groups not refreshed at login')) : undefined,
          ]);
        },
        0,
        'login-groups',
      );
    }
    await server.start();
    const ports: RunningParley['ports'] = { c2s: null, c2sDirectTls: null, http: null, https: null };
    // The link listener serves standalone muxes when it has a fixed port, with TLS unless it is on
    // loopback (mux.linkTls, docs/mux-protocol.md "Link security"). The embedded muxes use it when
    // it is on loopback and asks no client certificate; otherwise they get a plaintext listener of
    // their own on 127.0.0.1, so the default deployment keeps its fast loopback link.
    if (useMux || config.mux.linkPort !== 0 || unixSocketPath(config.mux.linkAddress)) {
      const m = config.mux;
      muxLink = new MuxLinkServer(server, muxSecret(config), m.auth, m.reportedAddresses);
      const linkTls = muxLinkEncrypted(m.linkTls, m.linkAddress);
      const tlsOpts = linkTls
        ? { cert: readFileSync(tls.certPath), key: readFileSync(tls.keyPath), clientCa: m.linkClientCa ? readPem(m.linkClientCa) : undefined }
        : null;
      let embedded: { host: string; port: number; fingerprint?: string } | null = null;
      const embeddedMayShare = isLocalLink(m.linkAddress) && !m.linkClientCa;
      if (m.linkPort !== 0 || unixSocketPath(m.linkAddress) || (useMux && embeddedMayShare)) {
        const addr = await muxLink.listen(m.linkAddress, m.linkPort, { tls: tlsOpts, insecure: m.insecure });
        if (embeddedMayShare) embedded = { host: addr.address, port: addr.port, fingerprint: linkTls ? new X509Certificate(readFileSync(tls.certPath)).fingerprint256 : undefined };
        log.info({ address: m.linkAddress, port: addr.port, tls: linkTls, auth: m.auth }, 'mux link listener');
      }
      if (useMux) {
        if (!embedded) {
          // Started by this process, on loopback: the shared secret authenticates them.
          const addr = await muxLink.listen('127.0.0.1', 0, { tls: null, auth: 'secret' });
          embedded = { host: addr.address, port: addr.port };
        }
        muxes = new MuxSupervisor({ config, link: embedded, count: m.count, log });
        await muxes.start();
      }
    }
    for (const [key, directTls] of [['c2s', false], ['c2sDirectTls', true]] as const) {
      const port = config.listen[key];
      if (port === null) continue;
      let l: C2SListener;
      if (muxes) {
        const sup = muxes;
        l = await listenHandOff(config.listen.address, port, (sock, localPort) => sup.dispatch(sock, directTls, localPort));
      } else {
        l = await listenC2S(server, tls, { port, address: config.listen.address, directTls, proxyProtocol: config.listen.proxyProtocol });
      }
      listeners.push(l);
      ports[key] = (l.address() as AddressInfo).port;
    }
    if (config.http.port !== null || config.http.tlsPort !== null) {
      web = await startWebContainer(server, tls);
      // /healthz, /readyz, /metrics (issue 6): readiness needs every client listener bound and, with muxes, a live link.
      ops = startOps(server, web, { listenersUp: () => listeners.every((l) => l.listening), muxLink, muxRequired: muxes !== null });
      bosh = startBosh(server, web); // XEP-0124/0206 at /http-bind (issue 6)
      websocket = startWebSocket(server, web); // RFC 7395 at /xmpp-websocket (issue 6)
      startHostMeta(server, web); // XEP-0156 at /.well-known/host-meta[.json]
      if (sso) web.mount('/sso', sso.router); // issue 9: browser sign-in and XMPP tokens
      ports.http = web.ports.http;
      ports.https = web.ports.https;
    }
    let statusTimer: NodeJS.Timeout | null = null;
    const statusPath = join(config.dataDir, 'status.json');
    const writeStatus = () => {
      const st = {
        pid: process.pid,
        updatedAt: new Date().toISOString(),
        hosts: server.hostNames(),
        ports,
        sessions: server.sessions.size,
        connections: server.connectionCount,
        storage: storage.kind,
        muxes: muxLink?.status() ?? [],
      };
      try {
        writeFileSync(`${statusPath}.tmp`, JSON.stringify(st, null, 2));
        renameSync(`${statusPath}.tmp`, statusPath);
      } catch (err) {
        log.warn({ err }, 'cannot write status file');
      }
    };
    if (opts.statusFile) {
      writeStatus();
      statusTimer = setInterval(writeStatus, 5000);
      statusTimer.unref();
    }
    let stopped = false;
    let flushes = 0;
    return {
      flushDirectoryCaches(reason) {
        const hosts: CacheFlushReport['hosts'] = [];
        for (const host of server.hostNames()) {
          const dir = server.auth.directory(host);
          if (!dir) continue;
          const st = dir.stats();
          dir.flushCache();
          hosts.push({ host, entries: st.size + st.negativeSize });
        }
        const report: CacheFlushReport = { pid: process.pid, generation: ++flushes, at: new Date().toISOString(), reason, hosts };
        log.info({ reason, hosts }, 'directory caches flushed');
        if (opts.statusFile) {
          const path = join(config.dataDir, CACHE_STATUS_FILE);
          try {
            writeFileSync(`${path}.tmp`, JSON.stringify(report, null, 2));
            renameSync(`${path}.tmp`, path);
          } catch (err) {
            log.warn({ err }, 'cannot write the cache status file');
          }
        }
        return report;
      },
      server,
      storage,
      ports,
      certPath: tls.certPath,
      ca: tls.ca,
      muxLink,
      muxes,
      web,
      acl,
      sso,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (statusTimer) clearInterval(statusTimer);
        acl?.close();
        ops?.close();
        // Stop accepting, close every stream, then give clients a moment to close their side.
        const closed = Promise.all(listeners.map((l) => new Promise<void>((r) => l.close(() => r()))));
        // Upgraded WebSocket connections would keep the HTTP servers from closing: end them first.
        await websocket?.close();
        bosh?.close();
        await web?.close();
        await sso?.close();
        await server.stop();
        const grace = setTimeout(() => {
          for (const l of listeners) l.destroyAll();
        }, 1000);
        await closed;
        clearTimeout(grace);
        await muxes?.stop();
        await muxLink?.close();
        await storage.close();
      },
    };
  } catch (err) {
    acl?.close();
    ops?.close();
    await sso?.close().catch(() => {});
    await web?.close().catch(() => {});
    for (const l of listeners) l.close();
    await muxes?.stop().catch(() => {});
    await muxLink?.close().catch(() => {});
    await server.stop().catch(() => {});
    await storage.close().catch(() => {});
    throw err;
  }
}

/** A client listener that never reads: each accepted socket is handed, paused, to a mux. */
function listenHandOff(address: string, port: number, hand: (sock: net.Socket, localPort: number) => void): Promise<C2SListener> {
  const srv = net.createServer({ pauseOnConnect: true }, (sock) => {
    sock.on('error', () => {});
    hand(sock, (srv.address() as AddressInfo).port);
  });
  (srv as C2SListener).destroyAll = () => {}; // sockets live in the muxes
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ port, host: address }, () => {
      srv.off('error', reject);
      resolve(srv as C2SListener);
    });
  });
}
