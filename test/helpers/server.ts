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
