// A Target for the no-op sink (bench/load/sink-server.ts), in its own process so that it is
// measured like a server and does not share the generator's event loop.
import { fork } from 'node:child_process';
import { join } from 'node:path';
import { NCPU, setAffinity } from './proc.js';
import type { Target, TargetOptions } from '../targets/types.js';

export async function startSink(o: TargetOptions): Promise<Target> {
  const child = fork(join(import.meta.dirname, 'sink-server.ts'), [String(o.port), o.domain], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((res, rej) => {
    child.once('message', () => res());
    child.once('exit', (code) => rej(new Error(`sink exited (${code})`)));
  });
  setAffinity(child.pid as number, `0-${NCPU - 1}`);
  return {
    name: 'no-op sink',
    version: 'echo sink (bench/load/sink-server.ts)',
    port: o.port,
    domain: o.domain,
    serverPids: () => [child.pid as number],
    muxPids: () => [],
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}
