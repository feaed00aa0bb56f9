// Registry of bound client sessions: bare JID -> resource -> session.
import type { C2SSession } from './session.js';

export class SessionRegistry {
  private readonly byBare = new Map<string, Map<string, C2SSession>>();
  private total = 0;

  get size(): number {
    return this.total;
  }

  /** Sessions of one account (possibly not yet available). */
  resources(bare: string): C2SSession[] {
    const m = this.byBare.get(bare);
    return m ? [...m.values()] : [];
  }

  count(bare: string): number {
    return this.byBare.get(bare)?.size ?? 0;
  }

  get(full: { bare: string; resource: string }): C2SSession | undefined {
    return this.byBare.get(full.bare)?.get(full.resource);
  }

  /** Available sessions (initial presence sent) of an account. */
  available(bare: string): C2SSession[] {
    const m = this.byBare.get(bare);
    if (!m) return [];
    const out: C2SSession[] = [];
    for (const s of m.values()) if (s.available) out.push(s);
    return out;
  }

  add(session: C2SSession): void {
    const jid = session.jid;
    if (!jid) throw new Error('session not bound');
    let m = this.byBare.get(jid.bare);
    if (!m) {
      m = new Map();
      this.byBare.set(jid.bare, m);
    }
    if (!m.has(jid.resource)) this.total++;
    m.set(jid.resource, session);
  }

  remove(session: C2SSession): boolean {
    const jid = session.jid;
    if (!jid) return false;
    const m = this.byBare.get(jid.bare);
    if (!m || m.get(jid.resource) !== session) return false;
    m.delete(jid.resource);
    this.total--;
    if (m.size === 0) this.byBare.delete(jid.bare);
    return true;
  }

  all(): IterableIterator<C2SSession> {
    const maps = this.byBare.values();
    return (function* () {
      for (const m of maps) yield* m.values();
    })();
  }
}
