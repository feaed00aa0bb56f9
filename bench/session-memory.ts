// Heap per idle session, measured inside one process: `node --expose-gc --import tsx
// bench/session-memory.ts [sessions] [--snapshot DIR]`. Starts Parley in-process (no mux, TCP),
// logs `sessions` users in from a forked child (PLAIN, roster get, presence: the W1 login of
// bench/run.ts), and prints the growth of this process's heap and RSS per session after GC. With
// --snapshot it also writes heap snapshots before and after (compare them in Chrome DevTools).
// Cheaper and steadier than W1's RSS reading for before/after numbers of a memory change.
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeHeapSnapshot } from 'node:v8';
import { XmppClient } from './load/client.js';

const { values: opt, positionals } = parseArgs({ options: { snapshot: { type: 'string' }, child: { type: 'string' } }, allowPositionals: true });
const N = Number(positionals[0] ?? 2000);

if (opt.child) {
  const port = Number(opt.child);
  for (let i = 0; i < N; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, N - i) }, async (_, k) => {
        const c = new XmppClient(i + k, '127.0.0.1', port);
        const o = { host: '127.0.0.1', port, domain: 'localhost', user: `u${i + k}`, password: 'pw', resource: 'r' };
        await c.login({ ...o, tls: false, mech: 'PLAIN', rosterGet: true, presence: true, timeoutMs: 30_000 });
      }),
    );
  }
  process.send?.('ready');
  await new Promise(() => {}); // keep the sessions open until killed
}

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error('run with node --expose-gc --import tsx bench/session-memory.ts');
  process.exit(2);
}
const { startTestServer } = await import('../test/helpers/server.js');
const srv = await startTestServer({
  tls: { required: false },
  auth: { allowPlainWithoutTls: true, maxFailuresPerAddress: 1e6, maxFailuresPerPair: 1e6 },
  limits: { connectionsPerAddress: 1e6, preAuthPerAddress: 1e6, idlePingSeconds: 0 },
});
await Promise.all(Array.from({ length: N }, (_, i) => srv.addUser(`u${i}`, 'pw')));
const port = srv.ports.c2s as number;

gc();
gc();
const m0 = process.memoryUsage();
if (opt.snapshot) writeHeapSnapshot(join(opt.snapshot, 'before.heapsnapshot'));
const child = fork(import.meta.filename, [String(N), '--child', String(port)], { execArgv: ['--import', 'tsx'] });
await new Promise((resolve, reject) => {
  child.once('message', resolve);
  child.once('exit', (code) => reject(new Error(`login child exited with ${code}`)));
});
await new Promise((r) => setTimeout(r, 2000));
gc();
gc();
const m1 = process.memoryUsage();
if (opt.snapshot) writeHeapSnapshot(join(opt.snapshot, 'after.heapsnapshot'));
const kib = (k: 'rss' | 'heapUsed' | 'external') => ((m1[k] - m0[k]) / 1024 / N).toFixed(2);
console.log(`${N} idle sessions (no mux, in-process), KiB per session: heapUsed ${kib('heapUsed')}, external ${kib('external')}, rss ${kib('rss')}`);
child.kill();
await srv.close();
process.exit(0);
