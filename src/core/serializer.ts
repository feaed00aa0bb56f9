// Runs async jobs one at a time per key: read-then-write sequences (cap checks) on one user's data
// must not interleave.
export type KeyedSerializer = <T>(key: string, fn: () => Promise<T>) => Promise<T>;

export function serializer(): KeyedSerializer {
  const tails = new Map<string, Promise<unknown>>();
  return <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const run = (tails.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = run.catch(() => undefined);
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return run;
  };
}
