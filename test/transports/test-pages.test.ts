// Issue 15 §4: the browser test pages (web/public/test/, which take a password in their URL) are
// not served by a server with the default configuration; only `http.testPages: true` (the test
// suite's browser tests) turns them on.
import { afterAll, describe, expect, it } from 'vitest';
import { startParley, type RunningParley } from '../../src/cli/app.js';
import { validateConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

describe('browser test pages', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanup) await c();
  });

  it('a server with the default http configuration answers 404 for /test/ on both ports', async () => {
    // Only ports and data directory differ from the embedded defaults: `http` keeps every default.
    const dataDir = mkdtempSync(join(tmpdir(), 'parley-testpages-'));
    const cfg = validateConfig({ dataDir, listen: { address: '127.0.0.1', c2s: 0, c2sDirectTls: 0 }, mux: { count: 0 }, modules: { proxy65: { port: 0 } } });
    expect(cfg.http.testPages).toBe(false);
    // The defaults' ports (5280/5281) may be taken on a shared machine: bind free ones, same settings otherwise.
    const running: RunningParley = await startParley({ ...cfg, http: { ...cfg.http, port: 0, tlsPort: 0 } }, { log: silentLogger() });
    cleanup.push(async () => {
      await running.stop();
      rmSync(dataDir, { recursive: true, force: true });
    });
    for (const base of [`http://127.0.0.1:${running.ports.http}`, `https://127.0.0.1:${running.ports.https}`]) {
      for (const path of ['/test/websocket.html', '/test/websocket.js', '/test/', '/test/websocket.html?user=a&password=b']) {
        const r = await fetch(`${base}${path}`);
        expect(r.status, `${base}${path}`).toBe(404);
        expect(await r.text()).not.toContain('WebSocket');
      }
      // The rest of the static files are still there.
      expect((await fetch(`${base}/signin/`)).status).toBe(200);
    }
  });

  it('serves them when http.testPages is on', async () => {
    const srv: TestServer = await startTestServer({ http: { address: '127.0.0.1', port: 0, tlsPort: 0, testPages: true } });
    cleanup.push(() => srv.close());
    const r = await fetch(`https://127.0.0.1:${srv.ports.https}/test/websocket.html`);
    expect(r.status).toBe(200);
    expect(await r.text()).toContain('Parley WebSocket test');
  });
});
