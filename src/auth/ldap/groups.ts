// Directory groups (issue 8): who belongs to which group, for shared roster groups and for @group
// principals of the access control files.
//
// - Static groups: groupOfNames `member` and groupOfUniqueNames `uniqueMember` hold DNs (a user, or
//   another group: nesting); posixGroup `memberUid` holds usernames. Attribute names are configured.
// - Dynamic groups: groupOfURLs `memberURL` holds LDAP URLs (RFC 4516: base??scope?filter), searched
//   with the service account on this directory (the URL's host is ignored), the filter AND-ed with
//   the user filter so that a dynamic group never brings in a disabled user.
// - Nesting is followed to `nestingDepth` levels; every group is expanded at most once per answer,
//   so a cycle (A in B, B in A) ends.
// - The group entries are read in one search of the group base (the "graph"); member DNs that are
//   not groups are read one by one (base-scope search inside the user filter). Every answer goes
//   through the directory cache (aging, expiration, negative entries), and concurrent misses for
//   the same key share one directory round trip.
import { NoSuchObjectError } from 'ldapts';
import type { LdapConfig } from '../../core/config.js';
import type { DirectoryEntry, DirectoryUser, SharedGroup, UserDirectory } from '../../core/directory.js';
import type { Logger } from '../../core/logger.js';
import { DirectoryCache, type CacheStats } from './cache.js';
import { escapeLocalpart } from '../../xmpp/jid.js';

export type GroupsConfig = NonNullable<LdapConfig['groups']>;

/** What the resolver needs from the directory it belongs to. */
export type GroupSource = Pick<UserDirectory, 'search' | 'findUser' | 'userFilter' | 'userAttribute' | 'displayNameAttribute'>;

/** Most users a dynamic group's URL may bring in (the directory's own size limit may be lower). */
const MAX_URL_MEMBERS = 5000;

interface Group {
  key: string;
  dn: string;
  name: string;
  displayName: string;
  memberDns: string[];
  memberUids: string[];
  urls: string[];
}

interface Graph {
  byDn: Map<string, Group>;
  byName: Map<string, Group>;
  /** Member DN key -> the groups that list it (for the reverse walk of groupsOf). */
  listedIn: Map<string, Group[]>;
}

/** DNs compared as the directory would, near enough: case and spaces around separators ignored. */
export function dnKey(dn: string): string {
  return dn.trim().toLowerCase().replace(/\s*([,=+])\s*/g, '$1');
}

function values(e: DirectoryEntry, attr: string): string[] {
  const a = attr.toLowerCase();
  for (const [k, v] of Object.entries(e.attributes)) if (k.toLowerCase() === a) return v;
  return [];
}

/** An RFC 4516 LDAP URL's search parts (the host is ignored: the URL is evaluated here). */
export function parseLdapUrl(url: string): { base: string; scope: 'base' | 'one' | 'sub'; filter: string } | null {
  const m = /^ldaps?:\/\/[^/]*\/?([^?]*)(?:\?([^?]*)(?:\?([^?]*)(?:\?([^?]*))?)?)?/i.exec(url.trim());
  if (!m) return null;
  try {
    const base = decodeURIComponent(m[1] ?? '');
    const scope = (m[3] || 'base').toLowerCase();
    if (scope !== 'base' && scope !== 'one' && scope !== 'sub') return null;
    let filter = decodeURIComponent(m[4] || '(objectClass=*)');
    if (!filter.startsWith('(')) filter = `(${filter})`;
    return { base, scope, filter };
  } catch {
    return null; // a bad %-escape
  }
}

export class GroupResolver {
  private readonly cache: DirectoryCache<unknown>;
  private readonly inflight = new Map<string, Promise<unknown>>();
  /** Last groups computed per username, for synchronous readers (the ACL engine): stale until refreshed. */
  private readonly lastKnown = new Map<string, string[]>();
  private readonly maxLastKnown: number;

  constructor(
    private readonly dir: GroupSource,
    private readonly cfg: GroupsConfig,
    cacheCfg: LdapConfig['cache'],
    private readonly log: Logger,
  ) {
    this.cache = new DirectoryCache(cacheCfg);
    this.maxLastKnown = cacheCfg.maxEntries;
  }

  /** The cached answer for `key`, or `load()`'s (one load per key at a time). */
  private async cached<T>(key: string, load: () => Promise<T | null>): Promise<T | null> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit as T | null;
    const running = this.inflight.get(key);
    if (running) return running as Promise<T | null>;
    const p = load()
      .then((v) => {
        this.cache.set(key, v);
        return v;
      })
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private graph(): Promise<Graph> {
    return this.cached<Graph>('graph', async () => {
      const c = this.cfg;
      const entries = await this.dir.search({
        base: c.base,
        scope: 'sub',
        filter: c.filter,
        attributes: [c.nameAttribute, c.displayNameAttribute, ...c.memberAttributes, ...c.memberUidAttributes, c.memberUrlAttribute],
        sizeLimit: c.maxGroups,
      });
      const g: Graph = { byDn: new Map(), byName: new Map(), listedIn: new Map() };
      for (const e of entries) {
        const name = values(e, c.nameAttribute)[0];
        if (!name) continue;
        const group: Group = {
          key: dnKey(e.dn),
          dn: e.dn,
          name,
          displayName: values(e, c.displayNameAttribute)[0] ?? name,
          // groupOfUniqueNames values may carry an optional UID suffix: "dn#'0101'B" (RFC 4517 §3.3.21).
          memberDns: c.memberAttributes.flatMap((a) => values(e, a)).map((v) => dnKey(v.replace(/#'[01]*'B$/, ''))),
          memberUids: c.memberUidAttributes.flatMap((a) => values(e, a)),
          urls: values(e, c.memberUrlAttribute),
        };
        g.byDn.set(group.key, group);
        if (g.byName.has(name.toLowerCase())) this.log.warn({ group: name }, 'several directory groups share a name; using the first');
        else g.byName.set(name.toLowerCase(), group);
        for (const m of group.memberDns) {
          const list = g.listedIn.get(m) ?? [];
          list.push(group);
          g.listedIn.set(m, list);
        }
      }
      return g;
    }) as Promise<Graph>;
  }

  /** A member DN that is not a group: the user it names, if it passes the user filter. */
  private userByDn(key: string, dn: string): Promise<DirectoryUser | null> {
    return this.cached<DirectoryUser>(`dn:${key}`, async () => {
      try {
        const [e] = await this.dir.search({ base: dn, scope: 'base', filter: this.dir.userFilter, attributes: [this.dir.userAttribute, this.dir.displayNameAttribute], sizeLimit: 1 });
        return e ? this.toUser(e) : null;
      } catch (err) {
        if (err instanceof NoSuchObjectError) return null; // a dangling member DN
        throw err;
      }
    });
  }

  private toUser(e: DirectoryEntry): DirectoryUser | null {
    const username = values(e, this.dir.userAttribute)[0];
    // The XMPP username: the directory value, XEP-0106-escaped (alice@example.com -> alice\40example.com).
    return username ? { dn: e.dn, username: escapeLocalpart(username), displayName: values(e, this.dir.displayNameAttribute)[0] ?? null } : null;
  }

  /** The users one memberURL selects, inside the user filter. */
  private urlMembers(url: string): Promise<DirectoryUser[]> {
    return this.cached<DirectoryUser[]>(`url:${url}`, async () => {
      const u = parseLdapUrl(url);
      if (!u) {
        this.log.warn({ url }, 'dynamic group: not an LDAP URL, ignored');
        return [];
      }
      try {
        const entries = await this.dir.search({
          base: u.base,
          scope: u.scope,
          filter: `(&${this.dir.userFilter}${u.filter})`,
          attributes: [this.dir.userAttribute, this.dir.displayNameAttribute],
          sizeLimit: MAX_URL_MEMBERS,
        });
        return entries.map((e) => this.toUser(e)).filter((x): x is DirectoryUser => x !== null);
      } catch (err) {
        if (err instanceof NoSuchObjectError) return [];
        throw err;
      }
    }) as Promise<DirectoryUser[]>;
  }

  /** The users of a group, nested groups expanded to the configured depth. */
  async members(name: string): Promise<DirectoryUser[]> {
    return (await this.cached<DirectoryUser[]>(`m:${name.toLowerCase()}`, async () => {
      const graph = await this.graph();
      const top = graph.byName.get(name.toLowerCase());
      if (!top) return [];
      const users = new Map<string, DirectoryUser>();
      const add = (u: DirectoryUser | null) => {
        if (u && !users.has(u.username.toLowerCase())) users.set(u.username.toLowerCase(), u);
      };
      const seen = new Set<string>();
      const visit = async (g: Group, level: number): Promise<void> => {
        seen.add(g.key);
        for (const uid of g.memberUids) add(await this.dir.findUser(uid));
        for (const dn of g.memberDns) {
          const sub = graph.byDn.get(dn);
          if (!sub) add(await this.userByDn(dn, dn));
          else if (level < this.cfg.nestingDepth && !seen.has(sub.key)) await visit(sub, level + 1);
        }
        for (const url of g.urls) for (const u of await this.urlMembers(url)) add(u);
      };
      await visit(top, 0);
      return [...users.values()];
    })) as DirectoryUser[];
  }

  /** The names of the groups the user belongs to: directly, through a dynamic group, or by nesting. */
  async groupsOf(username: string): Promise<string[]> {
    const lower = username.toLowerCase();
    const names = (await this.cached<string[]>(`of:${lower}`, async () => {
      const user = await this.dir.findUser(username);
      if (!user) return [];
      const graph = await this.graph();
      const direct: Group[] = [];
      const userKey = dnKey(user.dn);
      for (const g of graph.byDn.values()) {
        let member = g.memberDns.includes(userKey) || g.memberUids.some((u) => u.toLowerCase() === lower);
        for (const url of g.urls) {
          if (member) break;
          member = (await this.urlMembers(url)).some((u) => u.username.toLowerCase() === lower);
        }
        if (member) direct.push(g);
      }
      // Walk up: a group listing one of the user's groups contains the user too, `nestingDepth` levels up.
      const found = new Map(direct.map((g) => [g.key, g]));
      let frontier = direct;
      for (let level = 0; level < this.cfg.nestingDepth && frontier.length; level++) {
        const next: Group[] = [];
        for (const g of frontier) {
          for (const parent of graph.listedIn.get(g.key) ?? []) {
            if (found.has(parent.key)) continue;
            found.set(parent.key, parent);
            next.push(parent);
          }
        }
        frontier = next;
      }
      return [...found.values()].map((g) => g.name).sort();
    })) as string[];
    this.lastKnown.delete(lower);
    this.lastKnown.set(lower, names);
    if (this.lastKnown.size > this.maxLastKnown) this.lastKnown.delete(this.lastKnown.keys().next().value as string);
    return names;
  }

  /**
   * Synchronous readers (the access control engine): the user's groups as last resolved, or
   * undefined if never. A refresh is started in the background, so an aged answer is replaced soon.
   */
  knownGroups(username: string): readonly string[] | undefined {
    this.groupsOf(username).catch((err: unknown) => this.log.warn({ err: (err as Error).message, username }, 'directory groups not refreshed'));
    return this.lastKnown.get(username.toLowerCase());
  }

  /** The shared roster groups (configuration `groups.shared`) the user belongs to, with their members. */
  async sharedGroupsOf(username: string): Promise<SharedGroup[]> {
    const shared = this.cfg.shared;
    if (shared !== '*' && !shared.length) return [];
    const wanted = shared === '*' ? null : new Set(shared.map((s) => s.toLowerCase()));
    const names = (await this.groupsOf(username)).filter((n) => !wanted || wanted.has(n.toLowerCase()));
    const graph = await this.graph();
    const out: SharedGroup[] = [];
    for (const name of names) {
      out.push({ name, displayName: graph.byName.get(name.toLowerCase())?.displayName ?? name, members: await this.members(name) });
    }
    return out;
  }

  clear(): void {
    this.cache.clear();
  }

  stats(): CacheStats {
    return this.cache.stats();
  }
}
