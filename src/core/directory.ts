// The user directory a host's accounts live in (issue 8), as modules see it: src/auth/ldap
// implements it for LDAP; hosts with internal accounts have none. Modules (user search, vCards,
// shared roster groups, the roster kept in the directory, registration) reach it through
// ctx.directory(host) and never import src/auth.

/** One directory entry: attribute names as the directory spells them, values as text (binary ones base64 under `binary`). */
export interface DirectoryEntry {
  dn: string;
  attributes: Record<string, string[]>;
  /** Values of binary attributes (jpegPhoto, ...), when asked for by name in `binaryAttributes`. */
  binary: Record<string, Buffer[]>;
}

export interface DirectoryUser {
  dn: string;
  /** The XMPP username (the user attribute's value, as the directory spells it). */
  username: string;
  displayName: string | null;
}

export interface DirectorySearch {
  /** Default: the configured user base. */
  base?: string;
  scope?: 'base' | 'one' | 'sub';
  /** An LDAP filter; build values with escapeFilterValue (RFC 4515). */
  filter: string;
  attributes?: string[];
  /** Attributes to return as Buffers (e.g. jpegPhoto). */
  binaryAttributes?: string[];
  /** Most entries wanted (the directory's answer is cut there; default 100). */
  sizeLimit?: number;
  /** Answers are cached under this key (aging and expiration as configured); absent: always asked. */
  cacheKey?: string;
}

/** A shared roster group (issue 8): its members see each other without subscription requests. */
export interface SharedGroup {
  /** The group's name (its name attribute, e.g. cn). */
  name: string;
  /** What rosters show as the group (the configured display attribute, e.g. cn or description). */
  displayName: string;
  members: DirectoryUser[];
}

export type DirectoryChange = { operation: 'add' | 'delete' | 'replace'; attribute: string; values: string[] };

export interface UserDirectory {
  readonly host: string;
  /** The configured user settings (base, attributes, filter) modules build their searches on. */
  readonly userBase: string;
  readonly userAttribute: string;
  readonly displayNameAttribute: string;
  readonly userFilter: string;
  /** The user entry of an XMPP username (cached), or null. Throws when the directory is unreachable. */
  findUser(username: string): Promise<DirectoryUser | null>;
  /** A search with the service account. Throws when the directory is unreachable. */
  search(q: DirectorySearch): Promise<DirectoryEntry[]>;
  /** Writes with the service account (roster in the directory, registration). */
  modify(dn: string, changes: DirectoryChange[]): Promise<void>;
  add(dn: string, attributes: Record<string, string[]>): Promise<void>;
  /**
   * Registration into the directory (XEP-0077): creates the user's entry from the configured
   * template and sets its password with the Password Modify operation (RFC 3062). Throws
   * DirectoryConflictError when the username is taken; throws when the directory is unreachable.
   */
  createUser(username: string, password: string): Promise<DirectoryUser>;
  /** Names of the directory groups the user belongs to (static, dynamic, nested; cached). Empty without `groups` configured. */
  groupsOf(username: string): Promise<string[]>;
  /** The users of a group (nested groups expanded to the configured depth; cached). Empty for an unknown group. */
  members(group: string): Promise<DirectoryUser[]>;
  /** The shared roster groups the user belongs to, with their members (cached). */
  sharedGroupsOf(username: string): Promise<SharedGroup[]>;
  /** `parley cache flush`: every cached answer is asked again. */
  flushCache(): void;
}

/** The entry (or the username) already exists in the directory. */
export class DirectoryConflictError extends Error {
  override name = 'DirectoryConflictError';
}

/** RFC 4515 §3: a value placed in a filter, with `*`, `(`, `)`, `\` and NUL escaped. */
export function escapeFilterValue(value: string): string {
  return value.replace(/[*()\\\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
