// Starts a real Parley server in-process on loopback ports (port 0), with a temp data directory.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validateConfig, type ResolvedConfig } from '../../src/core/config.js';
import { silentLogger, createLogger, type Logger } from '../../src/core/logger.js';
import { startParley, type RunningParley } from '../../src/cli/app.js';

// The test server's certificate is self-signed and generated at test time.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

export interface TestServer extends RunningParley {
  dataDir: string;
  config: Readonly<ResolvedConfig>;
  domain: string;
  addUser(local: string, password?: string): Promise<string>;
  close(): Promise<void>;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

/**
 * `opts.log`: the server's logger (default: silent, or PARLEY_TEST_LOG=<level> to stderr); tests
 * that assert on log records pass a pino logger writing to an in-memory stream.
 */
export async function startTestServer(
  overrides: Record<string, unknown> & { limits?: DeepPartial<ResolvedConfig['limits']> } = {},
  opts: { log?: Logger } = {},
): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'parley-test-'));
  const raw = {
    hosts: ['localhost'],
    dataDir,
    listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0 },
    http: { address: '127.0.0.1', port: 0, tlsPort: 0 },
    // PARLEY_TEST_MUX=N runs the suite with clients going through N embedded muxes.
    mux: { count: Number(process.env.PARLEY_TEST_MUX ?? 0) },
    ...overrides,
    // The SOCKS5 proxy (XEP-0065) takes a free port, not 7777, unless a test configures it.
    modules: { proxy65: { port: 0 }, ...(overrides.modules as Record<string, unknown> | undefined) },
  };
  const config = validateConfig(raw);
  const log = opts.log ?? (process.env.PARLEY_TEST_LOG ? createLogger({ level: process.env.PARLEY_TEST_LOG }) : silentLogger());
  const running = await startParley(config, { log });
  const domain = config.hosts[0]?.domain ?? 'localhost';
  return {
    ...running,
    dataDir,
    config,
    domain,
    async addUser(local, password = 'secret-password') {
      const jid = await running.server.auth.create(`${local}@${domain}`, password);
      running.server.invalidateAccount(jid.bare);
      return jid.bare;
    },
    async close() {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let counter = 0;
/** A username unique within this test process. */
export function uniqueUser(prefix = 'user'): string {
  counter++;
  return `${prefix}${process.pid}x${counter}`;
}

/**
 * Resolves once the server has finished ending the session of `fullJid` (call it before the
 * session ends): every 'session.closed' handler has run to its end, the unavailable presence and
 * room exits it causes included. Hook handlers run one after another in priority order, each
 * awaited, and this one has the lowest priority, so it runs last. Use it before a barrier() (in
 * client.ts or raw.ts) on the session that must not hear from the closed one: nothing orders a
 * session's end against another session's stanzas, so a barrier alone would prove nothing.
 */
export function afterSessionClosed(srv: TestServer, fullJid: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`session ${fullJid} not closed within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = srv.server.hooks.on(
      'session.closed',
      ({ session }) => {
        if (session.jid?.full !== fullJid) return undefined;
        clearTimeout(timer);
        off();
        resolve();
        return undefined;
      },
      Number.NEGATIVE_INFINITY,
      'test',
    );
  });
}

/**
 * Resolves once the server has seen the connection of `fullJid` drop and keeps its session for
 * XEP-0198 resumption (instead of sleeping "long enough" after killing a socket); rejects after
 * `timeoutMs`.
 */
export async function hibernated(srv: TestServer, fullJid: string, timeoutMs = 5000): Promise<void> {
  const slash = fullJid.indexOf('/');
  const key = { bare: fullJid.slice(0, slash), resource: fullJid.slice(slash + 1) };
  const end = Date.now() + timeoutMs;
  while (srv.server.sessions.get(key)?.hibernated !== true) {
    if (Date.now() > end) throw new Error(`session ${fullJid} not hibernated within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
