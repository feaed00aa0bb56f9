// Composition root: builds storage, the server, its modules and listeners from a configuration.
// Used by `parley start` and by tests that run a server in-process.
import { mkdirSync, readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { ResolvedConfig } from '../core/config.js';
import { createLogger, type Logger } from '../core/logger.js';
import { Server } from '../core/server.js';
import { loadTlsMaterial } from '../core/tls.js';
import { openStorage } from '../storage/index.js';
import type { Storage } from '../storage/types.js';
import { listenC2S, type C2SListener } from '../transports/tcp.js';
import { builtinModules } from '../modules/index.js';

export interface RunningParley {
  server: Server;
  storage: Storage;
  /** Bound ports (useful when the configuration asked for port 0). */
  ports: { c2s: number | null; c2sDirectTls: number | null };
  certPath: string;
  stop(): Promise<void>;
}

/** Reads or creates the server secret (fake SCRAM salts, token keys) in dataDir. */
export function serverSecret(dataDir: string): Buffer {
  const path = join(dataDir, 'secret.key');
  if (existsSync(path)) return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  const secret = randomBytes(32);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, secret.toString('base64'), { mode: 0o600 });
  renameSync(tmp, path);
  return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
}

export async function openConfiguredStorage(config: Readonly<ResolvedConfig>): Promise<Storage> {
  mkdirSync(config.dataDir, { recursive: true });
  const s = config.storage;
  if (s.type === 'sqlite') return openStorage({ type: 'sqlite', path: s.path as string });
  return openStorage(s);
}

export async function startParley(config: Readonly<ResolvedConfig>, opts: { log?: Logger; statusFile?: boolean } = {}): Promise<RunningParley> {
  const log = opts.log ?? createLogger({ level: config.log.level });
  mkdirSync(config.dataDir, { recursive: true });
  const tls = await loadTlsMaterial(config);
  if (tls.generated) log.info({ cert: tls.certPath }, 'generated a self-signed certificate');
  const storage = await openConfiguredStorage(config);
  const server = new Server({ config, storage, log, secret: serverSecret(config.dataDir), modules: builtinModules });
  const listeners: C2SListener[] = [];
  try {
    await server.start();
    const ports: RunningParley['ports'] = { c2s: null, c2sDirectTls: null };
    if (config.listen.c2s !== null) {
      const l = await listenC2S(server, tls, { port: config.listen.c2s, address: config.listen.address, directTls: false });
      listeners.push(l);
      ports.c2s = (l.address() as AddressInfo).port;
    }
    if (config.listen.c2sDirectTls !== null) {
      const l = await listenC2S(server, tls, { port: config.listen.c2sDirectTls, address: config.listen.address, directTls: true });
      listeners.push(l);
      ports.c2sDirectTls = (l.address() as AddressInfo).port;
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
    return {
      server,
      storage,
      ports,
      certPath: tls.certPath,
      async stop() {
        if (stopped) return;
        stopped = true;
        if (statusTimer) clearInterval(statusTimer);
        // Stop accepting, close every stream, then give clients a moment to close their side.
        const closed = Promise.all(listeners.map((l) => new Promise<void>((r) => l.close(() => r()))));
        await server.stop();
        const grace = setTimeout(() => {
          for (const l of listeners) l.destroyAll();
        }, 1000);
        await closed;
        clearTimeout(grace);
        await storage.close();
      },
    };
  } catch (err) {
    for (const l of listeners) l.close();
    await server.stop().catch(() => {});
    await storage.close().catch(() => {});
    throw err;
  }
}
