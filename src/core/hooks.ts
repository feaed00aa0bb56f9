// Typed hook bus. Owners declare their hooks by augmenting `HookMap` (declaration merging):
//
//   declare module '../core/hooks.js' { interface HookMap { 'roster.push': { user: string } } }
//
// `fire` runs handlers by descending priority and stops at the first that returns HANDLED;
// `fold` threads a value through every handler. A failing handler is logged and skipped, except a
// thrown StanzaError or StreamError, which is a deliberate veto and propagates to the caller.
import { StanzaError, StreamError } from '../xmpp/errors.js';
import type { Logger } from './logger.js';

// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- augmented by every hook owner
export interface HookMap {}

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

  on<K extends keyof HookMap & string>(name: K, fn: Handler<HookMap[K]> | Folder<HookMap[K]>, priority = 0, owner = ''): () => void {
    const list = this.handlers.get(name) ?? [];
    const entry: Entry = { fn: fn as (arg: never) => unknown, priority, owner };
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

  has(name: keyof HookMap & string): boolean {
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
  async fold<K extends keyof HookMap & string>(name: K, value: HookMap[K]): Promise<HookMap[K]> {
    const list = this.handlers.get(name);
    if (!list) return value;
    let v = value;
    for (const h of list.slice()) {
      try {
        v = await (h.fn as Folder<HookMap[K]>)(v);
      } catch (err) {
        if (err instanceof StanzaError || err instanceof StreamError) throw err;
        this.log.error({ err, hook: name, owner: h.owner }, 'hook folder failed');
      }
    }
    return v;
  }

  /** Synchronous fold for hot paths; handlers must not be async. */
  foldSync<K extends keyof HookMap & string>(name: K, value: HookMap[K]): HookMap[K] {
    const list = this.handlers.get(name);
    if (!list) return value;
    let v = value;
    for (const h of list) {
      try {
        v = (h.fn as (x: HookMap[K]) => HookMap[K])(v);
      } catch (err) {
        if (err instanceof StanzaError || err instanceof StreamError) throw err;
        this.log.error({ err, hook: name, owner: h.owner }, 'hook folder failed');
      }
    }
    return v;
  }
}
