// Shared roster groups (issue 8; like ejabberd mod_shared_roster and Openfire shared groups): on a
// host whose accounts live in a directory, the members of a group configured as shared
// (`ldap.groups.shared`) see each other in their rosters, with subscription `both` and the group's
// display name as roster group, and exchange presence without subscription requests.
//
// - Nothing is stored: the items are computed from the directory (through its cache) at each
//   roster get and presence broadcast. A user's own stored item for the same contact keeps its name
//   and groups; its subscription shows as at least `both`.
// - No roster pushes when the directory changes: a new member appears at the next roster get (a
//   login) once the directory cache has aged out or been flushed (`parley cache flush`).
// - A shared item cannot be removed (not-allowed) and unsubscribing from it is ignored: membership
//   is decided in the directory.
// - Hosts with internal accounts have no directory: every function here answers "nothing shared".
import { createHash } from 'node:crypto';
import type { ModuleHost } from '../../core/module.js';
import type { RosterItem } from '../../storage/types.js';
import { Jid } from '../../xmpp/jid.js';

export interface SharedRoster {
  /** The user's shared contacts (bare JID -> item with subscription both); empty without a directory. */
  items(user: Jid): Promise<Map<string, RosterItem>>;
  /** Whether `contact` (a bare JID) shares a group with the user. */
  isShared(user: Jid, contact: string): Promise<boolean>;
}

export function sharedRoster(ctx: Pick<ModuleHost, 'directory' | 'log'>): SharedRoster {
  async function items(user: Jid): Promise<Map<string, RosterItem>> {
    const out = new Map<string, RosterItem>();
    const dir = ctx.directory(user.domain);
    if (!dir || !user.local) return out;
    let groups;
    try {
      groups = await dir.sharedGroupsOf(user.local);
    } catch (err) {
      // The directory is down: the stored roster still works; shared contacts come back with it.
      ctx.log.warn({ err: (err as Error).message, user: user.bare }, 'shared roster groups unavailable');
      return out;
    }
    for (const g of groups) {
      for (const m of g.members) {
        const jid = Jid.tryParse(`${m.username}@${user.domain}`);
        if (!jid || jid.bare === user.bare) continue;
        const have = out.get(jid.bare);
        if (have) {
          if (!have.groups.includes(g.displayName)) have.groups.push(g.displayName);
          continue;
        }
        out.set(jid.bare, { jid: jid.bare, name: m.displayName ?? undefined, subscription: 'both', ask: false, approved: false, groups: [g.displayName] });
      }
    }
    return out;
  }

  return {
    items,
    async isShared(user, contact) {
      if (!ctx.directory(user.domain)) return false;
      return (await items(user)).has(contact);
    },
  };
}

/**
 * The roster a client sees: stored items (shared ones raised to `both`, keeping the user's name and
 * groups when set) and then the shared contacts not stored. The version changes with the shared
 * part, so a client holding an older version gets the whole roster again.
 */
export function mergeShared(stored: { items: RosterItem[]; version: string }, shared: Map<string, RosterItem>): { items: RosterItem[]; version: string } {
  if (!shared.size) return stored;
  const items = stored.items.map((i) => {
    const s = shared.get(i.jid);
    if (!s) return i;
    return { ...i, subscription: 'both' as const, ask: false, name: i.name ?? s.name, groups: i.groups.length ? i.groups : s.groups };
  });
  const storedJids = new Set(stored.items.map((i) => i.jid));
  for (const s of shared.values()) if (!storedJids.has(s.jid)) items.push(s);
  const digest = createHash('sha1')
    .update(JSON.stringify([...shared.values()].map((s) => [s.jid, s.name, s.groups])))
    .digest('hex')
    .slice(0, 12);
  return { items, version: `${stored.version}-s${digest}` };
}
