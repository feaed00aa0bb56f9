// Audiences: who "users, a group, a room or everyone" means when a feature addresses many people at
// once (alerts, polls). A specification is a bare user JID, `group:NAME` (groups from configuration
// `acl.groups`, else the host's directory groups), `room:ROOM-JID` (the room's members and
// occupants, answered by whichever module hosts the room through the `venue.audience` fold) or
// `everyone` (every account of the host). The result is a list of existing local accounts.
import type { Storage } from '../storage/types.js';
import { Jid } from '../xmpp/jid.js';
import type { ResolvedConfig } from './config.js';
import type { UserDirectory } from './directory.js';
import type { FoldMap } from './hooks.js';

declare module './hooks.js' {
  interface FoldMap {
    /**
     * The people of a venue (a conference room): the module that hosts `venue` sets `members` to
     * the real bare JIDs of its occupants and affiliated members. With an `asker`, it throws a
     * StanzaError (forbidden) when the asker is not one of them; `asker` null is an administrative
     * look-up (the CLI). `members` stays null when no module knows the venue.
     */
    'venue.audience': { kind: 'room'; venue: string; asker: Jid | null; members: string[] | null };
  }
}

/** Why an audience cannot be resolved (a bad recipient, an unknown group): shown to the sender as is. */
export class AudienceError extends Error {
  override name = 'AudienceError';
}

/**
 * Groups from configuration `acl.groups` (name -> member JIDs), read defensively: the access control
 * configuration may not exist in this build, or may give members as `{ members: [...] }`.
 */
export function configuredGroups(config: Readonly<ResolvedConfig>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const acl = (config as unknown as { acl?: unknown }).acl;
  const groups = acl && typeof acl === 'object' ? (acl as { groups?: unknown }).groups : undefined;
  if (!groups || typeof groups !== 'object') return out;
  for (const [name, v] of Object.entries(groups as Record<string, unknown>)) {
    const list = Array.isArray(v) ? v : v && typeof v === 'object' ? (v as { members?: unknown }).members : undefined;
    if (Array.isArray(list)) out.set(name, list.filter((m): m is string => typeof m === 'string'));
  }
  return out;
}

export interface AudienceContext {
  storage: Storage;
  config: Readonly<ResolvedConfig>;
  /** For `room:` specifications; without it they are refused. */
  foldValue?: <K extends keyof FoldMap & string>(name: K, value: FoldMap[K]) => Promise<FoldMap[K]>;
  /** Who asks (checked by the room's module), or null for an administrative look-up. */
  asker?: Jid | null;
  /** The host's user directory (issue 8): its groups answer `group:NAME` when configuration has no such group. */
  directory?: (host: string) => UserDirectory | undefined;
}

/** Resolves audience specifications to existing local accounts (deduplicated, in order). */
export async function resolveAudience(ac: AudienceContext, host: string, specs: string[], maxRecipients: number): Promise<string[]> {
  const { storage, config } = ac;
  const isLocal = (d: string) => config.hosts.some((h) => h.domain === d);
  const out = new Set<string>();
  const groups = configuredGroups(config);
  const addJid = async (raw: string, what: string) => {
    const j = Jid.tryParse(raw);
    if (!j || !j.local || j.resource) throw new AudienceError(`${what}: not a bare user JID`);
    if (!isLocal(j.domain)) throw new AudienceError(`${what}: ${j.domain} is not a host of this server`);
    if (!(await storage.accounts.get(j.bare))) throw new AudienceError(`${what}: no such account`);
    out.add(j.bare);
  };
  for (const spec0 of specs) {
    const spec = spec0.trim();
    if (!spec) continue;
    if (spec === 'everyone') {
      for (const u of await storage.accounts.list(host)) out.add(u);
    } else if (spec.startsWith('group:')) {
      const name = spec.slice(6);
      const members = groups.get(name);
      const dir = members ? undefined : ac.directory?.(host);
      if (members) {
        for (const m of members) await addJid(m, `${spec} member ${m}`);
      } else if (dir) {
        // A directory group: its users are the host's accounts by definition (no account look-up).
        const users = await dir.members(name);
        if (!users.length) throw new AudienceError(`${spec}: no such group, or it has no members`);
        for (const u of users) {
          const j = Jid.tryParse(`${u.username}@${host}`);
          if (j?.local) out.add(j.bare);
        }
      } else {
        throw new AudienceError(`${spec}: no such group`);
      }
    } else if (spec.startsWith('room:')) {
      const room = Jid.tryParse(spec.slice(5));
      if (!room || !room.local || room.resource) throw new AudienceError(`${spec}: not a room JID`);
      if (!ac.foldValue) throw new AudienceError(`${spec}: rooms cannot be addressed from here`);
      const ev = await ac.foldValue('venue.audience', { kind: 'room', venue: room.bare, asker: ac.asker ?? null, members: null });
      if (!ev.members) throw new AudienceError(`${spec}: no such room`);
      // A room may hold people from other servers; only local accounts can be addressed here.
      for (const m of ev.members) {
        const j = Jid.tryParse(m);
        if (j?.local && isLocal(j.domain) && (await storage.accounts.get(j.bare))) out.add(j.bare);
      }
    } else {
      await addJid(spec, spec);
    }
    if (out.size > maxRecipients) throw new AudienceError(`more than ${maxRecipients} recipients`);
  }
  if (!out.size) throw new AudienceError('no recipients');
  return [...out];
}
