// Access control files (issue 7, docs/acl.md): the rules in force, their resolution, and reloading
// (on demand: SIGHUP / `parley reload`; and on change: fs.watch on the directory, debounced).
// Reload is per file: a malformed file is reported and its previous rules stay in force, while the
// good files beside it are applied.
import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DefaultAccessControl, ENTITLEMENTS, isEntitlement, SERVICE_RIGHTS, SUN_RIGHT_NAMES, type AccessControl, type AclExplanation, type Entitlement, type ServiceRight, type VenueRight } from '../../core/acl.js';
import { Jid } from '../../xmpp/jid.js';
import { AclSyntaxError, MAX_FILE_BYTES, parseAclFile, roomKeyFromFileName, safeDecode, subjectKey, type AclEntry, type Grant } from './parse.js';

const NO_DIRECTORY = ' does not exist: built-in defaults apply';

/** The service files and the right each one governs. */
export const SERVICE_FILES: Readonly<Record<string, ServiceRight>> = {
  'rooms.acl': 'room.create',
  'channels.acl': 'channel.create',
  'publish.acl': 'channel.publish',
  'alerts.acl': 'alert.send',
  'polls.acl': 'poll.create',
  'settings.acl': 'settings.save',
  'admins.acl': 'admin',
};

/**
 * The Sun IM file names accepted instead (`sysAdmin.acl` for `admins.acl`, ...). A right governed
 * by both its file and the Sun one is a load error naming both: there is never a tie to break.
 */
export const SUN_SERVICE_FILES: Readonly<Record<string, ServiceRight>> = Object.fromEntries(
  SERVICE_RIGHTS.flatMap((r) => (SUN_RIGHT_NAMES[r] ? [[`${SUN_RIGHT_NAMES[r]}.acl`, r]] : [])),
);

/** Sun IM files with no equivalent here: a specific warning rather than "unknown file". */
const SUN_UNSUPPORTED: Readonly<Record<string, string>> = {
  'sysWatch.acl': "Sun IM's privilege to watch other users' presence has no equivalent here (presence follows roster subscriptions)",
};

/** The subdirectory of entitlement files: services/<entitlement>.acl (issue 9). */
export const SERVICES_DIR = 'services';

type Target =
  | { type: 'service'; right: ServiceRight }
  | { type: 'entitlement'; service: Entitlement }
  | { type: 'room'; key: string }
  | { type: 'channel'; key: string };

/** One entry in force; the line is kept so that explain() can point at it. */
interface Rule {
  grant: Grant;
  line: number;
  /** The subject as written in the file (`@staff`, `*@example.com`). */
  subject: string;
}

/** The entry that decided a check, and why it matched. */
interface Match extends Rule {
  via?: string;
}

/** One file's rules, indexed by subject kind so that a check costs a few map lookups. */
interface LoadedFile {
  path: string;
  target: Target;
  rules: number;
  users: Map<string, Rule>;
  groups: Map<string, Rule>;
  domains: Map<string, Rule>;
  everyone: Rule | null;
}

export interface AclFileReport {
  /** Path relative to the ACL directory, with "/" separators. */
  file: string;
  /** Entries in force for this file after the reload. */
  rules: number;
  /**
   * loaded: parsed and in force; kept: malformed, the previous version stays in force; rejected:
   * malformed and never loaded, so the file is treated as absent; removed: deleted since last time.
   */
  status: 'loaded' | 'kept' | 'rejected' | 'removed';
  error?: string;
}

export interface AclReloadReport {
  /** Counts reloads since start (1 = the initial load). */
  generation: number;
  at: string;
  reason: string;
  directory: string;
  files: AclFileReport[];
  /** `file:line: what was expected`, one per malformed file. */
  errors: string[];
  warnings: string[];
}

export class AclLoadError extends Error {
  override name = 'AclLoadError';
  constructor(readonly problems: string[]) {
    super(`invalid access control files:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

export interface FileAccessControlOptions {
  directory: string;
  /** Group name → member JIDs (the `acl.groups` configuration; the directory provides them later). */
  groups?: Readonly<Record<string, readonly string[]>>;
  /** Whether a domain is served here: the defaults for absent files grant only local accounts. */
  isLocal: (domain: string) => boolean;
  log?: Logger;
  /** Quiet period after the last change event before an automatic reload. */
  debounceMs?: number;
  /** Groups from elsewhere (issue 8: directory groups), see setGroupResolver(). */
  groupResolver?: (who: Jid) => Iterable<string> | undefined;
}

const RANK: Record<Grant, number> = { deny: 0, allow: 1, NONE: 0, READ: 1, WRITE: 2, MANAGE: 3 };

/** Within one level of specificity an explicit refusal wins, else the strongest grant. */
function combine(a: Match | null, b: Match): Match {
  if (a === null) return b;
  if (RANK[a.grant] === 0) return a;
  if (RANK[b.grant] === 0) return b;
  return RANK[b.grant] > RANK[a.grant] ? b : a;
}

export class FileAccessControl implements AccessControl {
  readonly directory: string;
  private readonly fallback: DefaultAccessControl;
  private readonly log: Logger | undefined;
  private readonly debounceMs: number;
  private readonly events = new EventEmitter();
  private files = new Map<string, LoadedFile>();
  private service = new Map<ServiceRight, LoadedFile>();
  private entitlements = new Map<Entitlement, LoadedFile>();
  private rooms = new Map<string, LoadedFile>();
  private channels = new Map<string, LoadedFile>();
  private memberOf = new Map<string, Set<string>>();
  private knownGroups = new Set<string>();
  private groupResolver: ((who: Jid) => Iterable<string> | undefined) | null = null;
  private generation = 0;
  private last: AclReloadReport | null = null;
  private running: Promise<AclReloadReport> | null = null;
  private queued: Promise<AclReloadReport> | null = null;
  private watchers = new Map<string, FSWatcher>();
  private debounce: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(opts: FileAccessControlOptions) {
    this.directory = opts.directory;
    this.fallback = new DefaultAccessControl(opts.isLocal);
    this.log = opts.log;
    this.debounceMs = opts.debounceMs ?? 200;
    this.setGroups(opts.groups ?? {});
    this.groupResolver = opts.groupResolver ?? null;
  }

  /** Replaces the group definitions (members are bare JIDs; invalid ones are logged and skipped). */
  setGroups(groups: Readonly<Record<string, readonly string[]>>): void {
    const memberOf = new Map<string, Set<string>>();
    const known = new Set<string>();
    for (const [rawName, members] of Object.entries(groups)) {
      const name = rawName.toLowerCase();
      known.add(name);
      for (const m of members) {
        const jid = Jid.tryParse(m);
        if (!jid || !jid.local) {
          this.log?.warn({ group: name, member: m }, 'acl.groups: not a user JID, ignored');
          continue;
        }
        let set = memberOf.get(jid.bare);
        if (!set) memberOf.set(jid.bare, (set = new Set()));
        set.add(name);
      }
    }
    this.memberOf = memberOf;
    this.knownGroups = known;
  }

  /**
   * Adds groups from elsewhere (issue 8: the LDAP directory of a host), asked synchronously at each
   * check; names are matched case-insensitively, like `acl.groups`.
   */
  setGroupResolver(fn: ((who: Jid) => Iterable<string> | undefined) | null): void {
    this.groupResolver = fn;
  }

  // ---- AccessControl ----

  allows(right: ServiceRight, who: Jid): boolean {
    // Administrators hold every service right, as in the Sun IM design.
    if (this.isAdmin(who)) return true;
    if (right === 'admin') return false;
    const file = this.service.get(right);
    if (!file) return this.fallback.allows(right, who);
    return this.resolve(file, who)?.grant === 'allow';
  }

  entitled(service: Entitlement, who: Jid): boolean {
    const file = this.entitlements.get(service);
    // No file: local accounts, as before entitlements existed.
    if (!file) return this.fallback.entitled(service, who);
    return this.resolve(file, who)?.grant === 'allow';
  }

  explain(question: ServiceRight | Entitlement, who: Jid): AclExplanation {
    const entitlement = isEntitlement(question);
    if (!entitlement && question !== 'admin') {
      const admin = this.explain('admin', who);
      if (admin.allowed) return { ...admin, via: [admin.via, 'administrators hold every right'].filter(Boolean).join('; ') };
    }
    const file = entitlement ? this.entitlements.get(question) : this.service.get(question);
    if (!file) return this.fallback.explain(question, who);
    const m = this.resolve(file, who);
    if (!m) return { allowed: false, file: file.path, rule: 'no entry matches; a file denies whoever it does not name' };
    return { allowed: m.grant === 'allow', file: file.path, line: m.line, rule: `${m.grant} ${m.subject}`, via: m.via };
  }

  venue(kind: 'room' | 'channel', venue: string, who: Jid): VenueRight | null {
    const file = kind === 'room' ? this.roomFile(venue) : this.channelFile(venue);
    if (!file) return null;
    if (this.isAdmin(who)) return 'MANAGE';
    // A file governs the venue entirely: nobody it names holds nothing.
    return (this.resolve(file, who)?.grant as VenueRight | undefined) ?? 'NONE';
  }

  // ---- inspection ----

  /** The report of the last reload (null before the first). */
  lastReport(): AclReloadReport | null {
    return this.last;
  }

  /** Runs `fn` after every reload (automatic or requested); returns an unsubscribe function. */
  onReload(fn: (report: AclReloadReport) => void): () => void {
    this.events.on('reload', fn);
    return () => this.events.off('reload', fn);
  }

  /** Whether the file named (relative path) governs something now. */
  governs(file: string): boolean {
    return this.files.has(file);
  }

  // ---- loading ----

  /** The first load: any malformed file is an error (there are no previous rules to keep). */
  async start(): Promise<AclReloadReport> {
    const report = await this.reload('start');
    if (report.errors.length) throw new AclLoadError(report.errors);
    return report;
  }

  /**
   * Re-reads the directory. Reloads never overlap: a request made while one runs gets the next
   * one, so every caller sees files read after its request.
   */
  reload(reason = 'request'): Promise<AclReloadReport> {
    if (!this.running) {
      this.running = this.doReload(reason).finally(() => {
        this.running = null;
      });
      return this.running;
    }
    if (!this.queued) {
      const after = this.running.catch(() => undefined);
      this.queued = after.then(() => {
        this.queued = null;
        return this.reload(reason);
      });
    }
    return this.queued;
  }

  private async doReload(reason: string): Promise<AclReloadReport> {
    const found = await this.scan();
    const warnings = [...found.warnings];
    const errors: string[] = [];
    const reports: AclFileReport[] = [];
    const next = new Map<string, LoadedFile>();
    const claimed = new Map<string, string>(); // venue key → file that governs it
    // A right with both its file and the Sun-named one: the Sun file is never in force (not even
    // its previous version), so one file alone governs the right, whatever either contains.
    const rightFile = new Map<ServiceRight, string>();
    for (const f of found.files) {
      if (typeof f.target === 'object' && f.target.type === 'service' && (!rightFile.has(f.target.right) || SERVICE_FILES[f.path])) rightFile.set(f.target.right, f.path);
    }
    for (const f of found.files) {
      const right = typeof f.target === 'object' && f.target.type === 'service' ? f.target.right : undefined;
      const governing = right ? rightFile.get(right) : undefined;
      if (right && governing && governing !== f.path) {
        const error = `${f.path}: ${governing} and ${f.path} both govern ${right} (${f.path} is its Sun IM name); keep one of them`;
        errors.push(error);
        reports.push({ file: f.path, rules: 0, status: 'rejected', error });
        continue;
      }
      let loaded: LoadedFile | string;
      try {
        loaded = await this.loadFile(f.path, f.target, warnings);
      } catch (err) {
        loaded = err instanceof AclSyntaxError ? err.message : `${f.path}: ${(err as Error).message}`;
      }
      if (typeof loaded !== 'string') {
        const venueKey = loaded.target.type === 'service' || loaded.target.type === 'entitlement' ? null : `${loaded.target.type}:${loaded.target.key}`;
        const other = venueKey ? claimed.get(venueKey) : undefined;
        if (venueKey && other) loaded = `${f.path}: governs the same venue as ${other}`;
        else if (venueKey) claimed.set(venueKey, f.path);
      }
      if (typeof loaded === 'string') {
        errors.push(loaded);
        const previous = this.files.get(f.path);
        if (previous) {
          next.set(f.path, previous);
          reports.push({ file: f.path, rules: previous.rules, status: 'kept', error: loaded });
        } else {
          reports.push({ file: f.path, rules: 0, status: 'rejected', error: loaded });
        }
        continue;
      }
      next.set(f.path, loaded);
      reports.push({ file: f.path, rules: loaded.rules, status: 'loaded' });
    }
    for (const path of this.files.keys()) {
      if (!found.files.some((f) => f.path === path)) reports.push({ file: path, rules: 0, status: 'removed' });
    }
    this.install(next);
    const report: AclReloadReport = {
      generation: ++this.generation,
      at: new Date().toISOString(),
      reason,
      directory: this.directory,
      files: reports.sort((a, b) => a.file.localeCompare(b.file)),
      errors: errors.sort(),
      warnings,
    };
    this.last = report;
    for (const e of errors) this.log?.error({ reason }, `access control file rejected, previous rules kept: ${e}`);
    // No directory at all is the out-of-the-box state, not a problem: the reload report says so,
    // the log only at info.
    for (const w of warnings) {
      if (w.endsWith(NO_DIRECTORY)) this.log?.info(`access control files: ${w}`);
      else this.log?.warn(`access control files: ${w}`);
    }
    this.log?.info({ reason, files: reports.map((r) => `${r.file}: ${r.status}, ${r.rules} rules`) }, 'access control files loaded');
    this.events.emit('reload', report);
    return report;
  }

  private install(files: Map<string, LoadedFile>): void {
    const service = new Map<ServiceRight, LoadedFile>();
    const entitlements = new Map<Entitlement, LoadedFile>();
    const rooms = new Map<string, LoadedFile>();
    const channels = new Map<string, LoadedFile>();
    for (const f of files.values()) {
      if (f.target.type === 'service') service.set(f.target.right, f);
      else if (f.target.type === 'entitlement') entitlements.set(f.target.service, f);
      else if (f.target.type === 'room') rooms.set(f.target.key, f);
      else channels.set(f.target.key, f);
    }
    // Swapped in one go: a check never sees half of a reload.
    this.files = files;
    this.service = service;
    this.entitlements = entitlements;
    this.rooms = rooms;
    this.channels = channels;
  }

  private async scan(): Promise<{ files: { path: string; target: Target | string }[]; warnings: string[] }> {
    const files: { path: string; target: Target | string }[] = [];
    const warnings: string[] = [];
    let top: string[];
    try {
      top = (await readdir(this.directory)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        warnings.push(`directory ${this.directory}${NO_DIRECTORY}`);
        return { files, warnings };
      }
      throw err;
    }
    for (const name of top) {
      if (name.startsWith('.')) continue; // editor swap files, dotfiles
      if (name === SERVICES_DIR) {
        for (const sub of await this.listAcl(join(this.directory, name))) {
          const service = sub.slice(0, -'.acl'.length);
          const path = `${name}/${sub}`;
          if (isEntitlement(service)) files.push({ path, target: { type: 'entitlement', service } });
          else warnings.push(`${path}: unknown service, ignored (expected one of ${ENTITLEMENTS.map((e) => `${e}.acl`).join(', ')})`);
        }
        continue;
      }
      if (name === 'rooms' || name === 'channels') {
        for (const sub of await this.listAcl(join(this.directory, name))) {
          const base = sub.slice(0, -'.acl'.length);
          const path = `${name}/${sub}`;
          if (name === 'rooms') {
            const r = roomKeyFromFileName(base);
            files.push({ path, target: 'key' in r ? { type: 'room', key: r.key } : `${path}: ${r.error}` });
          } else {
            const node = safeDecode(base);
            files.push({ path, target: node ? { type: 'channel', key: node } : `${path}: file name: invalid %-escape` });
          }
        }
        continue;
      }
      if (!name.endsWith('.acl')) continue; // backups (rooms.acl~), notes
      const right = SERVICE_FILES[name] ?? SUN_SERVICE_FILES[name];
      if (right) files.push({ path: name, target: { type: 'service', right } });
      else if (SUN_UNSUPPORTED[name]) warnings.push(`${name}: ${SUN_UNSUPPORTED[name]}; ignored`);
      else warnings.push(`${name}: unknown file, ignored (expected one of ${Object.keys(SERVICE_FILES).join(', ')} or their Sun IM names ${Object.keys(SUN_SERVICE_FILES).join(', ')}, rooms/, channels/, services/)`);
    }
    return { files, warnings };
  }

  private async listAcl(dir: string): Promise<string[]> {
    try {
      return (await readdir(dir)).filter((n) => n.endsWith('.acl') && !n.startsWith('.')).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
      throw err;
    }
  }

  private async loadFile(path: string, target: Target | string, warnings: string[]): Promise<LoadedFile | string> {
    if (typeof target === 'string') return target;
    const buf = await readFile(join(this.directory, path));
    if (buf.length > MAX_FILE_BYTES) return `${path}: file larger than ${MAX_FILE_BYTES} bytes`;
    const parsed = parseAclFile(path, buf.toString('utf8'), target.type === 'service' || target.type === 'entitlement' ? 'service' : 'venue');
    for (const g of parsed.groups) {
      if (!this.knownGroups.has(g) && !this.groupResolver) warnings.push(`${path}: group @${g} is not defined (acl.groups): it matches nobody`);
    }
    const file: LoadedFile = { path, target, rules: parsed.entries.length, users: new Map(), groups: new Map(), domains: new Map(), everyone: null };
    for (const e of parsed.entries as AclEntry[]) {
      const s = e.subject;
      const rule: Rule = { grant: e.grant, line: e.line, subject: subjectKey(s) };
      if (s.kind === 'user') file.users.set(s.jid, rule);
      else if (s.kind === 'group') file.groups.set(s.name, rule);
      else if (s.kind === 'domain') file.domains.set(s.domain, rule);
      else file.everyone = rule;
    }
    return file;
  }

  // ---- resolution ----

  private isAdmin(who: Jid): boolean {
    const file = this.service.get('admin');
    if (!file) return this.fallback.allows('admin', who);
    return this.resolve(file, who)?.grant === 'allow';
  }

  /** Most specific level that matches: the user, then their groups, then their domain, then `*`. */
  private resolve(file: LoadedFile, who: Jid): Match | null {
    const bare = who.bare;
    const user = file.users.get(bare);
    if (user) return user;
    let byGroup: Match | null = null;
    const name = who.local ?? bare;
    const groups = this.memberOf.get(bare);
    if (groups) for (const g of groups) {
      const rule = file.groups.get(g);
      if (rule) byGroup = combine(byGroup, { ...rule, via: `${name} is in group ${g}` });
    }
    const external = file.groups.size && this.groupResolver ? this.groupResolver(who.toBare()) : undefined;
    if (external) for (const g of external) {
      const rule = file.groups.get(g.toLowerCase());
      if (rule) byGroup = combine(byGroup, { ...rule, via: `${name} is in group ${g.toLowerCase()} (directory or identity provider)` });
    }
    if (byGroup) return byGroup;
    // Wildcards name users: a server or component JID (no localpart) is nobody's "everyone".
    if (!who.local) return null;
    const domain = file.domains.get(who.domain);
    if (domain) return domain;
    return file.everyone ? { ...file.everyone, via: 'everyone' } : null;
  }

  private roomFile(venue: string): LoadedFile | undefined {
    const jid = Jid.tryParse(venue);
    if (!jid) return undefined;
    const bare = jid.toBare();
    return this.rooms.get(bare.bare) ?? (bare.local ? this.rooms.get(bare.local) : undefined);
  }

  private channelFile(venue: string): LoadedFile | undefined {
    const exact = this.channels.get(venue);
    if (exact) return exact;
    // "node@service" asked and only a service-independent "node" file exists.
    const at = venue.lastIndexOf('@');
    return at > 0 ? this.channels.get(venue.slice(0, at)) : undefined;
  }

  // ---- watching ----

  /**
   * Reloads automatically when a file in the directory (or rooms/, channels/) changes. Watching
   * directories, not files, also sees editors that save by writing a new file and renaming it.
   */
  watch(): void {
    if (this.closed) return;
    this.arm(this.directory);
    this.arm(join(this.directory, 'rooms'));
    this.arm(join(this.directory, 'channels'));
    this.arm(join(this.directory, SERVICES_DIR));
  }

  private arm(dir: string): void {
    if (this.watchers.has(dir)) return;
    let w: FSWatcher;
    try {
      w = watch(dir, { persistent: false }, (_event, name) => {
        // rooms/ or channels/ created after start: watch it too.
        if (dir === this.directory && (name === 'rooms' || name === 'channels' || name === SERVICES_DIR)) this.arm(join(dir, name));
        this.schedule();
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log?.warn({ err, dir }, 'cannot watch access control directory');
      else if (dir === this.directory) this.log?.info({ dir }, 'access control directory absent: not watched (parley reload still works)');
      return;
    }
    w.on('error', (err) => {
      // The directory was removed or became unreadable: stop watching it; reload still works.
      this.log?.warn({ err, dir }, 'access control directory watch ended');
      w.close();
      this.watchers.delete(dir);
      this.schedule();
    });
    this.watchers.set(dir, w);
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      // Subdirectories that reappeared are re-armed before reading them.
      if (!this.closed) this.watch();
      this.reload('change').catch((err: unknown) => this.log?.error({ err }, 'access control reload failed'));
    }, this.debounceMs);
    this.debounce.unref();
  }

  /** Stops watching. Rules stay in force. */
  close(): void {
    this.closed = true;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = null;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
