// Rosters kept in the directory (issue 8, `hosts[].ldap.roster: directory`), for sites where the
// directory is the system of record. Each user's contact list lives in the multi-valued attribute
// parleyRosterItem of their own entry (auxiliary class parleyUser, docs/ldap/parley.schema), one
// value per contact, JSON: {"jid","name"?,"subscription","ask","approved","groups"} (docs/ldap.md).
//
// - Writes go through the service account and stay small: a change deletes the contact's old value
//   and adds the new one; the object class is added with the first write when the entry lacks it.
//   Writes of one user are serialized here, and read the entry fresh (the delete must name the
//   stored value exactly); reads go through the directory cache (aging as configured).
// - The roster version (RFC 6121 §2.6) is a digest of the values: it changes with every change and
//   survives a restart or a lost database, which a counter in the database would not.
// - Pending inbound subscription requests (RFC 6121 §3.1.3) stay in the database store: they are
//   transient stanzas awaiting an answer, not part of the contact list.
// - Values the server cannot read (edited by hand) are skipped with a warning, never dropped.
import { createHash } from 'node:crypto';
import type { ResolvedConfig } from '../../core/config.js';
import type { UserDirectory } from '../../core/directory.js';
import type { Logger } from '../../core/logger.js';
import type { Roster, RosterItem, RosterStore, Storage, Subscription } from '../../storage/types.js';

export const ROSTER_ATTRIBUTE = 'parleyRosterItem';
export const ROSTER_CLASS = 'parleyUser';

const SUBSCRIPTIONS = new Set<Subscription>(['none', 'to', 'from', 'both']);

interface Stored {
  dn: string;
  hasClass: boolean;
  /** Contact bare JID -> its parsed item and every raw value naming it (hand edits may leave two). */
  items: Map<string, { item: RosterItem; raws: string[] }>;
  raws: string[];
}

/** One directory value of an item; the key order is fixed so equal items give equal values. */
export function encodeRosterItem(i: RosterItem): string {
  return JSON.stringify({ jid: i.jid, ...(i.name ? { name: i.name } : {}), subscription: i.subscription, ask: i.ask, approved: i.approved, groups: i.groups });
}

export function decodeRosterItem(raw: string): RosterItem | null {
  try {
    const v = JSON.parse(raw) as Record<string, unknown>;
    if (typeof v.jid !== 'string' || !v.jid || !SUBSCRIPTIONS.has(v.subscription as Subscription)) return null;
    const groups = Array.isArray(v.groups) ? v.groups.filter((g): g is string => typeof g === 'string') : [];
    return { jid: v.jid, name: typeof v.name === 'string' && v.name ? v.name : undefined, subscription: v.subscription as Subscription, ask: v.ask === true, approved: v.approved === true, groups };
  } catch {
    return null;
  }
}

/** RFC 6121 §2.6 version: a digest of the stored values (order-independent). */
function versionOf(raws: string[]): string {
  const h = createHash('sha256');
  for (const r of [...raws].sort()) h.update(r).update('\0');
  return h.digest('hex').slice(0, 16);
}

const attrValues = (attrs: Record<string, string[]>, name: string): string[] => {
  const key = Object.keys(attrs).find((k) => k.toLowerCase() === name.toLowerCase());
  return key ? (attrs[key] ?? []) : [];
};

export class DirectoryRosterStore implements RosterStore {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(
    private readonly dir: UserDirectory,
    /** Keeps the pending inbound subscription requests (the database). */
    private readonly pending: RosterStore,
    private readonly log: Logger,
  ) {}

  private async load(user: string, fresh: boolean): Promise<Stored | null> {
    const found = await this.dir.findUser(user.slice(0, user.lastIndexOf('@')));
    if (!found) return null;
    const [e] = await this.dir.search({
      base: found.dn,
      scope: 'base',
      filter: '(objectClass=*)',
      attributes: ['objectClass', ROSTER_ATTRIBUTE],
      sizeLimit: 1,
      ...(fresh ? {} : { cacheKey: `roster:${found.dn.toLowerCase()}` }),
    });
    if (!e) return null;
    const raws = attrValues(e.attributes, ROSTER_ATTRIBUTE);
    const items = new Map<string, { item: RosterItem; raws: string[] }>();
    for (const raw of raws) {
      const item = decodeRosterItem(raw);
      if (!item) {
        this.log.warn({ dn: e.dn, value: raw.slice(0, 200) }, `unreadable ${ROSTER_ATTRIBUTE} value skipped`);
        continue;
      }
      const had = items.get(item.jid);
      items.set(item.jid, { item, raws: [...(had?.raws ?? []), raw] });
    }
    const hasClass = attrValues(e.attributes, 'objectClass').some((c) => c.toLowerCase() === ROSTER_CLASS.toLowerCase());
    return { dn: e.dn, hasClass, items, raws };
  }

  /** Runs the writes of one user one after the other (each reads what the previous one wrote). */
  private serialized<T>(user: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(user) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.locks.set(user, tail);
    void tail.then(() => {
      if (this.locks.get(user) === tail) this.locks.delete(user);
    });
    return next;
  }

  async get(user: string): Promise<Roster> {
    const s = await this.load(user, false);
    if (!s) return { version: versionOf([]), items: [] };
    return { version: versionOf(s.raws), items: [...s.items.values()].map((v) => v.item) };
  }

  async getItem(user: string, contact: string): Promise<RosterItem | null> {
    return (await this.load(user, false))?.items.get(contact)?.item ?? null;
  }

  async count(user: string): Promise<number> {
    return (await this.load(user, false))?.items.size ?? 0;
  }

  setItem(user: string, item: RosterItem): Promise<string> {
    return this.serialized(user, async () => {
      const s = await this.load(user, true);
      if (!s) throw new Error(`${user} has no directory entry to keep a roster in`);
      const value = encodeRosterItem(item);
      const old = s.items.get(item.jid)?.raws ?? [];
      if (old.length === 1 && old[0] === value) return versionOf(s.raws);
      await this.dir.modify(s.dn, [
        ...(s.hasClass ? [] : [{ operation: 'add' as const, attribute: 'objectClass', values: [ROSTER_CLASS] }]),
        ...(old.length ? [{ operation: 'delete' as const, attribute: ROSTER_ATTRIBUTE, values: old }] : []),
        { operation: 'add', attribute: ROSTER_ATTRIBUTE, values: [value] },
      ]);
      return versionOf([...s.raws.filter((r) => !old.includes(r)), value]);
    });
  }

  removeItem(user: string, contact: string): Promise<string | null> {
    return this.serialized(user, async () => {
      const s = await this.load(user, true);
      const old = s?.items.get(contact)?.raws;
      if (!s || !old) return null;
      await this.dir.modify(s.dn, [{ operation: 'delete', attribute: ROSTER_ATTRIBUTE, values: old }]);
      return versionOf(s.raws.filter((r) => !old.includes(r)));
    });
  }

  addPendingIn(user: string, contact: string, stanza: string): Promise<void> {
    return this.pending.addPendingIn(user, contact, stanza);
  }
  removePendingIn(user: string, contact: string): Promise<void> {
    return this.pending.removePendingIn(user, contact);
  }
  listPendingIn(user: string): Promise<{ contact: string; stanza: string }[]> {
    return this.pending.listPendingIn(user);
  }
}

/**
 * The server's storage with the roster store of hosts configured with `ldap.roster: directory`
 * replaced by their directory: every feature that reads rosters (the roster module, presence-based
 * access in PEP, last activity, blocking, MAM preferences...) sees the same contact list.
 */
export function withDirectoryRosters(storage: Storage, config: Readonly<ResolvedConfig>, directory: (host: string) => UserDirectory | undefined, log: Logger): Storage {
  const db = storage.roster;
  const byHost = new Map<string, RosterStore>();
  for (const h of config.hosts) {
    const dir = h.accounts === 'ldap' && h.ldap?.roster === 'directory' ? directory(h.domain) : undefined;
    if (dir) byHost.set(h.domain, new DirectoryRosterStore(dir, db, log.child({ host: h.domain, roster: 'directory' })));
  }
  if (!byHost.size) return storage;
  const pick = (user: string): RosterStore => byHost.get(user.slice(user.lastIndexOf('@') + 1)) ?? db;
  const roster: RosterStore = {
    get: (u) => pick(u).get(u),
    getItem: (u, c) => pick(u).getItem(u, c),
    setItem: (u, i) => pick(u).setItem(u, i),
    removeItem: (u, c) => pick(u).removeItem(u, c),
    count: (u) => pick(u).count(u),
    addPendingIn: (u, c, s) => pick(u).addPendingIn(u, c, s),
    removePendingIn: (u, c) => pick(u).removePendingIn(u, c),
    listPendingIn: (u) => pick(u).listPendingIn(u),
  };
  // A view over the same backend: everything but the roster is the storage's own.
  return new Proxy(storage, { get: (target, prop, receiver) => (prop === 'roster' ? roster : Reflect.get(target, prop, receiver)) });
}
