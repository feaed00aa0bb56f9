// The data directory holds SCRAM keys, the archive, tokens and web sessions: it is private to the
// server's user (issue 16 §1). Created 0700; at start an existing one whose modes let others in is
// made private (directories 0700, files 0600) with a log line; `parley check-config` reports it.
// The CLI also sets the process umask to 077, so files SQLite creates later (-wal, -shm) are 0600.
import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../core/logger.js';

/** Paths under `dir` (itself included) that group or others may access, with their modes. Symlinks are not followed. */
export function exposedPaths(dir: string): { path: string; mode: number; directory: boolean }[] {
  const out: { path: string; mode: number; directory: boolean }[] = [];
  const walk = (path: string) => {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st || st.isSymbolicLink()) return;
    const mode = st.mode & 0o777;
    if (mode & 0o077) out.push({ path, mode, directory: st.isDirectory() });
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  walk(dir);
  return out;
}

/** Creates the data directory 0700, or makes an existing one private; logs what it changed. */
export function ensurePrivateDataDir(dir: string, log?: Logger): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const exposed = exposedPaths(dir);
  for (const p of exposed) chmodSync(p.path, p.directory ? 0o700 : 0o600);
  if (exposed.length) {
    log?.warn(
      { dataDir: dir, fixed: exposed.length, examples: exposed.slice(0, 5).map((p) => `${p.path} (${p.mode.toString(8)})`) },
      'data directory was readable by other local users: made private (directories 0700, files 0600)',
    );
  }
}

/** check-config's warning, or null when the data directory is private (or does not exist yet). */
export function dataDirWarning(dir: string): string | null {
  const exposed = exposedPaths(dir);
  if (!exposed.length) return null;
  const list = exposed.slice(0, 5).map((p) => `${p.path} (${p.mode.toString(8)})`).join(', ');
  return `dataDir: ${exposed.length} path(s) other local users can read, e.g. ${list}; it holds password keys, messages and tokens: run chmod -R go-rwx ${dir} (parley start does it)`;
}
