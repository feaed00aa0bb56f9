// Typed hook bus. Owners declare their hooks by augmenting `HookMap` (fired events) or `FoldMap`
// (values threaded through every handler), by declaration merging:
//
//   declare module '../core/hooks.js' { interface HookMap { 'roster.changed': { user: string } } }
//
// The two maps are disjoint, so a handler of the wrong kind does not compile. `fire` runs
// handlers by descending priority and stops at the first that returns HANDLED; `fold` threads a
// value through every handler. A failing handler is logged and skipped, except a
// thrown StanzaError or StreamError, which is a deliberate veto and propagates to the caller.
import { StanzaError, StreamError } from '../xmpp/errors.js';
import type { Logger } from './logger.js';

// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- augmented by every hook owner
export interface HookMap {}
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- augmented by every fold owner
export interface FoldMap {}

/** Returned by a `fire` handler that took the event. */
export const HANDLED = true;
export type HookResult = boolean | undefined;

type Handler<T> = (event: T) => HookResult | Promise<HookResult>;
type Folder<T> = (value: T) => T | Promise<T>;

interface Entry {
  fn: (arg: never) => unknown;
  priority: number;
  owner: string;
}

export class HookBus {
  private readonly handlers = new Map<string, Entry[]>();

  constructor(private readonly log: Logger) {}

  /** Adds a handler of a fired hook; returns its removal. */
  on<K extends keyof HookMap & string>(name: K, fn: Handler<HookMap[K]>, priority = 0, owner = ''): () => void {
    return this.add(name, fn, priority, owner);
  }

  /** Adds a folder of a fold hook; returns its removal. */
  onFold<K extends keyof FoldMap & string>(name: K, fn: Folder<FoldMap[K]>, priority = 0, owner = ''): () => void {
    return this.add(name, fn, priority, owner);
  }

  private add(name: string, fn: (arg: never) => unknown, priority: number, owner: string): () => void {
    const list = this.handlers.get(name) ?? [];
    const entry: Entry = { fn, priority, owner };
    list.push(entry);
    list.sort((a, b) => b.priority - a.priority);
    this.handlers.set(name, list);
    return () => {
      const l = this.handlers.get(name);
      if (!l) return;
      const i = l.indexOf(entry);
      if (i !== -1) l.splice(i, 1);
    };
  }

  has(name: (keyof HookMap | keyof FoldMap) & string): boolean {
    return (this.handlers.get(name)?.length ?? 0) > 0;
  }

  /** Runs handlers until one returns HANDLED; resolves true if one did. */
  async fire<K extends keyof HookMap & string>(name: K, event: HookMap[K]): Promise<boolean> {
    const list = this.handlers.get(name);
    if (!list) return false;
    for (const h of list.slice()) {
      try {
        const r = await (h.fn as Handler<HookMap[K]>)(event);
        if (r === HANDLED) return true;
      } catch (err) {
        if (err instanceof StanzaError || err instanceof StreamError) throw err;
        this.log.error({ err, hook: name, owner: h.owner }, 'hook handler failed');
      }
    }
    return false;
  }

  /** Threads `value` through every handler (each returns the new value). */
  async fold<K extends keyof FoldMap & string>(name: K, value: FoldMap[K]): Promise<FoldMap[K]> {
    const list = this.handlers.get(name);
    if (!list) return value;
    let v = value;
    for (const h of list.slice()) {
      try {
        v = await (h.fn as Folder<FoldMap[K]>)(v);
      } catch (err) {
        if (err instanceof StanzaError || err instanceof StreamError) throw err;
        this.log.error({ err, hook: name, owner: h.owner }, 'hook folder failed');
      }
    }
    return v;
  }

  /** Synchronous fold for hot paths; handlers must not be async. */
  foldSync<K extends keyof FoldMap & string>(name: K, value: FoldMap[K]): FoldMap[K] {
    const list = this.handlers.get(name);
    if (!list) return value;
    let v = value;
    for (const h of list) {
      try {
        v = (h.fn as (x: FoldMap[K]) => FoldMap[K])(v);
      } catch (err) {
        if (err instanceof StanzaError || err instanceof StreamError) throw err;
        this.log.error({ err, hook: name, owner: h.owner }, 'hook folder failed');
      }
    }
    return v;
  }
}
