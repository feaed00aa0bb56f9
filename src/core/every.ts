// Periodic work, for modules (ctx.every) and the core alike: the task runs every `intervalMs` on an
// unref'd timer (it never keeps the process alive), a slow run is not stacked up behind itself, and
// a failure is logged and does not stop later runs. Returns the function that stops it.
import type { Logger } from './logger.js';

export function every(intervalMs: number, what: string, task: () => Promise<void>, log: Logger, opts: { atStart?: boolean } = {}): () => void {
  let running = false;
  const run = () => {
    if (running) return;
    running = true;
    task()
      .catch((err: unknown) => log.error({ err }, `${what} failed`))
      .finally(() => (running = false));
  };
  const first = opts.atStart ? setTimeout(run, 0) : undefined;
  first?.unref();
  const timer = setInterval(run, intervalMs);
  timer.unref();
  return () => {
    clearTimeout(first);
    clearInterval(timer);
  };
}
