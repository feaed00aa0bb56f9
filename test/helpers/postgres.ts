// Throwaway PostgreSQL server for tests: a real `postgres` process on a fresh data directory.
// Every call is self-contained (own temp dir, own unix-socket dir, own port), so vitest workers in
// separate processes can each start one at the same time. A port picked as "free" can be taken by
// another worker before postgres binds it: startup then fails with "could not bind" and is retried
// on a new port, and the server we reach is checked to be ours (data_directory) before use.
// PostgreSQL refuses to run as root, so under root initdb/postgres run as the `postgres` user.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';

export interface PostgresServer {
  /** postgres://postgres@127.0.0.1:PORT/parley_test (trust auth, loopback only). */
  url: string;
  /** Connection URL for another database on the same server. */
  urlFor(database: string): string;
  stop(): Promise<void>;
}

const DATABASE = 'parley_test';
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 5;

function findBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'postgres')) && existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      'PostgreSQL server binaries not found: run `apt-get install postgresql` ' +
        '(looked for /usr/lib/postgresql/*/bin/{postgres,initdb})',
    );
  }
  return join(root, versions[0]!, 'bin');
}

/** uid/gid to run the server as: ourselves, or the `postgres` system user when we are root. */
function serverIdentity(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('running as root but there is no `postgres` system user to run PostgreSQL as');
  }
}


/** Keeps the last ~64 KB of a stream, for error messages. */
function tail(proc: ChildProcess): () => string {
  let buf = '';
  const add = (chunk: Buffer) => {
    buf = (buf + chunk.toString()).slice(-65536);
  };
  proc.stdout?.on('data', add);
  proc.stderr?.on('data', add);
  return () => buf;
}

function exited(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => proc.once('exit', () => resolve()));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(cmd: string, args: string[], id: { uid: number; gid: number } | undefined, cwd: string) {
  const proc = spawn(cmd, args, { ...id, cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  const output = tail(proc);
  const code = await new Promise<number | null>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('exit', (c) => resolve(c));
  });
  if (code !== 0) throw new Error(`${cmd} exited with ${code}:\n${output()}`);
}

/**
 * Watchdog: if this process dies without calling stop() (worker crash, SIGTERM), the pipe to the
 * shell closes, `read` returns, and the shell kills the server and removes its directory.
 */
function startWatchdog(pid: number, dir: string): ChildProcess {
  const dog = spawn('sh', ['-c', `read _; kill -KILL ${pid} 2>/dev/null; sleep 1; rm -rf '${dir}'`], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  dog.unref();
  (dog.stdin as unknown as { unref?: () => void }).unref?.();
  return dog;
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = findBinDir();
  const id = serverIdentity();
  const dir = mkdtempSync(join(tmpdir(), 'parley-pg-'));
  const data = join(dir, 'data');
  const sockets = join(dir, 'sock');
  mkdirSync(sockets);
  if (id) {
    chownSync(dir, id.uid, id.gid);
    chownSync(sockets, id.uid, id.gid);
  }

  let proc: ChildProcess | undefined;
  let dog: ChildProcess | undefined;
  const killNow = () => {
    proc?.kill('SIGKILL');
  };

  try {
    await run(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync', '--no-instructions'],
      id,
      dir,
    );

    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      proc = spawn(
        join(bin, 'postgres'),
        [
          '-D', data,
          '-p', String(port),
          '-k', sockets,
          '-c', 'listen_addresses=127.0.0.1',
          '-c', 'fsync=off', // test data: speed over crash safety
          '-c', 'full_page_writes=off',
          '-c', 'shared_buffers=32MB',
          '-c', 'max_connections=60',
        ],
        { ...id, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } },
      );
      const output = tail(proc);
      process.once('exit', killNow);
      const server = proc;
      let gone = false;
      server.once('exit', () => {
        gone = true;
      });

      const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
      const deadline = Date.now() + READY_TIMEOUT_MS;
      let ready = false;
      while (!gone && Date.now() < deadline) {
        const client = new pg.Client({ connectionString: admin, connectionTimeoutMillis: 2000 });
        client.on('error', () => {});
        try {
          await client.connect();
          const { rows } = await client.query<{ data_directory: string }>('SHOW data_directory');
          if (rows[0]?.data_directory !== data) {
            throw new Error(`port ${port} is served by another PostgreSQL (${rows[0]?.data_directory})`);
          }
          await client.query(`CREATE DATABASE ${DATABASE}`);
          ready = true;
        } catch (err) {
          // "starting up" / connection refused: keep polling; a foreign server: give up on this port.
          if ((err as Error).message.includes('another PostgreSQL')) {
            server.kill('SIGKILL');
            await exited(server);
            gone = true;
          }
        } finally {
          await client.end().catch(() => {});
        }
        if (ready) break;
        await sleep(100);
      }

      if (ready) {
        proc = server;
        dog = startWatchdog(server.pid!, dir);
        const url = `postgres://postgres@127.0.0.1:${port}/${DATABASE}`;
        let stopping: Promise<void> | undefined;
        return {
          url,
          urlFor: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
          stop() {
            stopping ??= (async () => {
              if (server.exitCode === null && server.signalCode === null) {
                server.kill('SIGINT'); // fast shutdown: abort sessions, checkpoint, exit
                const timer = setTimeout(() => server.kill('SIGKILL'), STOP_TIMEOUT_MS);
                await exited(server);
                clearTimeout(timer);
              }
              process.removeListener('exit', killNow);
              dog?.kill('SIGKILL');
              rmSync(dir, { recursive: true, force: true });
            })();
            return stopping;
          },
        };
      }

      process.removeListener('exit', killNow);
      if (!gone) {
        server.kill('SIGKILL');
        await exited(server);
        throw new Error(`PostgreSQL did not become ready within ${READY_TIMEOUT_MS} ms:\n${output()}`);
      }
      await exited(server);
      const log = output();
      const portTaken = /could not bind|Address already in use|another PostgreSQL/.test(log) || server.signalCode === 'SIGKILL';
      if (!portTaken || attempt >= PORT_ATTEMPTS) {
        throw new Error(`PostgreSQL exited during startup (code ${server.exitCode}, signal ${server.signalCode}):\n${log}`);
      }
      // Our data directory may hold a stale postmaster.pid from the failed attempt; postgres copes.
    }
  } catch (err) {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited(proc);
    }
    process.removeListener('exit', killNow);
    dog?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
