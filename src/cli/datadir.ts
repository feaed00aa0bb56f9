// The data directory holds SCRAM keys, the archive, tokens and web sessions: it is private to the
// server's user (issue 16 §1). Created 0700; at start an existing one whose modes let others in is
// made private (directories 0700, files 0600) with a log line; `parley check-config` reports it.
// The CLI also sets the process umask to 077, so files SQLite creates later (-wal, -shm) are 0600.
//
// A data directory given as a symlink (/var/lib/parley -> /srv/parley) is checked where it points.
// Inside it, symlinks are neither followed nor changed, and each mode is changed through a file
// descriptor opened without following links and checked to be the entry that was looked at, so an
// entry swapped for a link meanwhile cannot make the server change a file elsewhere.
import { closeSync, constants, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../core/logger.js';

interface Exposed {
  path: string;
  mode: number;
  directory: boolean;
  dev: number;
  ino: number;
}

/**
 * Paths under `dir` (itself included) that group or others may access, with their modes, when
 * `dir` itself lets them in; none when it does not. Symlinks are not followed.
 */
export function exposedPaths(dir: string): Exposed[] {
  const out: Exposed[] = [];
  const walk = (path: string) => {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st || st.isSymbolicLink()) return;
    const mode = st.mode & 0o777;
    if (mode & 0o077) out.push({ path, mode, directory: st.isDirectory(), dev: st.dev, ino: st.ino });
    if (st.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name));
  };
  let root: string;
  try {
    root = realpathSync(dir);
  } catch {
    return out; // does not exist yet
  }
  // A private directory keeps everything below it private (others cannot get in): only when the
  // directory itself is open is the tree walked, so a start does not stat every uploaded file.
  const st = lstatSync(root);
  if ((st.mode & 0o077) === 0) return out;
  walk(root);
  return out;
}

/** chmod through a descriptor opened with O_NOFOLLOW, only if it is still the entry that was examined. */
function chmodNoFollow(p: Exposed, mode: number): boolean {
  let fd: number;
  try {
    fd = openSync(p.path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | (p.directory ? constants.O_DIRECTORY : 0));
  } catch {
    return false; // gone, or now a symlink
  }
  try {
    const st = fstatSync(fd);
    if (st.dev !== p.dev || st.ino !== p.ino) return false;
    fchmodSync(fd, mode);
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Creates the data directory 0700, or makes an existing one private; logs what it changed. */
export function ensurePrivateDataDir(dir: string, log?: Logger): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const exposed = exposedPaths(dir);
  const fixed = exposed.filter((p) => chmodNoFollow(p, p.directory ? 0o700 : 0o600));
  if (fixed.length) {
    log?.warn(
      { dataDir: dir, fixed: fixed.length, examples: fixed.slice(0, 5).map((p) => `${p.path} (${p.mode.toString(8)})`) },
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
