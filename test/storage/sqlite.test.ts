// SQLite backend: the storage contract on a file and in memory, crash durability of offline
// messages across a real SIGKILL, and the migration bookkeeping.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { LATEST_SCHEMA_VERSION, SchemaTooNewError } from '../../src/storage/migrations.js';
import { openSqlite } from '../../src/storage/sqlite.js';
import { storageContract } from './contract.js';
import { archiveContract } from './archive-contract.js';
import { pubsubContract } from './pubsub-contract.js';
import { uploadContract } from './upload-contract.js';
import { alertsContract } from './alerts-contract.js';
import { pollsContract } from './polls-contract.js';
import { mucContract } from './muc-contract.js';
import { tokensContract } from './tokens-contract.js';
import { ssoContract } from './sso-contract.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'parley-sqlite-'));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

storageContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'parley.db') }));
storageContract('sqlite (:memory:)', () => openSqlite({ path: ':memory:' }));
archiveContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'archive.db') }));
pubsubContract('sqlite', () => openSqlite({ path: ':memory:' }));
uploadContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'uploads.db') }));
alertsContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'alerts.db') }));
pollsContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'polls.db') }));
mucContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'muc.db') }));
const tokensDb = join(tempDir(), 'tokens.db');
ssoContract('sqlite (file)', () => openSqlite({ path: join(tempDir(), 'sso.db') }));
tokensContract('sqlite (file)', () => openSqlite({ path: tokensDb }), async () => {
  const db = new Database(tokensDb, { readonly: true });
  try {
    return JSON.stringify(db.prepare('SELECT * FROM xmpp_tokens').all());
  } finally {
    db.close();
  }
});

describe('sqlite specifics', () => {
  it('uses WAL with synchronous=NORMAL on a file', async () => {
    const path = join(tempDir(), 'wal.db');
    const s = await openSqlite({ path });
    await s.close();
    const db = new Database(path, { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    db.close();
  });

  it('offline messages survive SIGKILL right after push resolved', async () => {
    const dir = tempDir();
    const path = join(dir, 'crash.db');
    const script = join(dir, 'child.mts');
    const storageUrl = pathToFileURL(join(root, 'src/storage/sqlite.ts')).href;
    // The child acknowledges each id on stdout (synchronously) once push() resolved, then dies
    // without any chance to close or checkpoint the database.
    writeFileSync(
      script,
      `import { writeSync } from 'node:fs';
       import { openSqlite } from ${JSON.stringify(storageUrl)};
       const s = await openSqlite({ path: process.argv[2] });
       for (let i = 0; i < 25; i++) {
         const id = await s.offline.push('crash@example.com', '<message id="m' + i + '"/>', 1000 + i, 100);
         writeSync(1, id + '\\n');
       }
       process.kill(process.pid, 'SIGKILL');
      `,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, path], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
      child.on('exit', (c, s) => res([c, s])),
    );
    expect({ code, signal }, err).toEqual({ code: null, signal: 'SIGKILL' });
    const acked = out.trim().split('\n').map(Number);
    expect(acked).toHaveLength(25);
    // The commits live only in the WAL (no checkpoint, no clean close): recovery must replay it.
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);

    const s = await openSqlite({ path });
    try {
      const msgs = await s.offline.list('crash@example.com');
      expect(msgs.map((m) => m.id)).toEqual(acked);
      expect(msgs.map((m) => m.stanza)).toEqual(Array.from({ length: 25 }, (_, i) => `<message id="m${i}"/>`));
    } finally {
      await s.close();
    }
  });
});

describe('sqlite migrations', () => {
  it('reopening an existing database is idempotent and keeps the data', async () => {
    const path = join(tempDir(), 'mig.db');
    const a = await openSqlite({ path });
    await a.keyval.set('u@example.com', 's', 'k', 'v');
    await a.close();
    const b = await openSqlite({ path });
    expect(await b.keyval.get('u@example.com', 's', 'k')).toBe('v');
    await b.close();
    const db = new Database(path, { readonly: true });
    expect(db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all()).toEqual(
      Array.from({ length: LATEST_SCHEMA_VERSION }, (_, i) => i + 1),
    );
    db.close();
  });

  it('two connections opening one fresh file concurrently both succeed', async () => {
    const path = join(tempDir(), 'race.db');
    const [a, b] = await Promise.all([openSqlite({ path }), openSqlite({ path })]);
    await a.offline.push('u@example.com', '<m/>', 0, 10);
    expect(await b.offline.count('u@example.com')).toBe(1);
    await a.close();
    await b.close();
  });

  it('refuses a database written by a newer Parley', async () => {
    const path = join(tempDir(), 'future.db');
    await (await openSqlite({ path })).close();
    const db = new Database(path);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
      LATEST_SCHEMA_VERSION + 1,
      'from the future',
      Date.now(),
    );
    db.close();
    const err = await openSqlite({ path }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SchemaTooNewError);
    expect((err as Error).message).toMatch(
      new RegExp(`version ${LATEST_SCHEMA_VERSION + 1}\\b.*only knows versions up to ${LATEST_SCHEMA_VERSION}\\b`),
    );
  });
});
