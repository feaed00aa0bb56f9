// Access control files (issue 7, docs/acl.md): the parser. One entry a line, `#` comments; a
// service file says `allow|deny <subjects>`, a venue file says `MANAGE|WRITE|READ|NONE <subjects>`.
// Every error names the file, the line and what was expected, so that `parley reload` and the log
// can point the administrator at the exact spot.
import { Jid, prepDomain, prepLocal } from '../../xmpp/jid.js';
import type { VenueRight } from '../../core/acl.js';

/** Who an entry is about, from the most specific kind to the least. */
export type Subject =
  | { kind: 'user'; jid: string }
  | { kind: 'group'; name: string }
  | { kind: 'domain'; domain: string }
  | { kind: 'everyone' };

/** Service files decide allow/deny; venue files grant one of the venue rights. */
export type Grant = 'allow' | 'deny' | VenueRight;

export interface AclEntry<G extends Grant = Grant> {
  subject: Subject;
  grant: G;
  line: number;
}

export type FileKind = 'service' | 'venue';

export interface ParsedAclFile<G extends Grant = Grant> {
  kind: FileKind;
  entries: AclEntry<G>[];
  /** Groups the file names, to warn about ones nobody belongs to. */
  groups: string[];
}

export class AclSyntaxError extends Error {
  override name = 'AclSyntaxError';
  constructor(
    readonly file: string,
    readonly line: number,
    readonly detail: string,
  ) {
    // Line 0: the problem is the file itself (its name or size), not one of its lines.
    super(line > 0 ? `${file}:${line}: ${detail}` : `${file}: ${detail}`);
  }
}

const VENUE_RIGHTS: readonly VenueRight[] = ['MANAGE', 'WRITE', 'READ', 'NONE'];
const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Admin-written files, but still bounded: a runaway generator must not eat the server's memory. */
export const MAX_FILE_BYTES = 1024 * 1024;

/** A `#` starts a comment at the start of a line or after whitespace (a localpart may contain `#`). */
function stripComment(line: string): string {
  const m = /(^|\s)#/.exec(line);
  return m ? line.slice(0, m.index) : line;
}

export function subjectKey(s: Subject): string {
  switch (s.kind) {
    case 'user':
      return s.jid;
    case 'group':
      return `@${s.name}`;
    case 'domain':
      return `*@${s.domain}`;
    case 'everyone':
      return '*';
  }
}

/** Parses one subject token; returns an error message (without position) when it is not one. */
export function parseSubject(token: string): Subject | string {
  if (token === '*') return { kind: 'everyone' };
  if (token.startsWith('@')) {
    const name = token.slice(1);
    if (!GROUP_NAME.test(name)) return `invalid group name "${token}": expected @ followed by letters, digits, ".", "_" or "-"`;
    return { kind: 'group', name: name.toLowerCase() }; // group names are case-insensitive, as in LDAP
  }
  if (token.startsWith('*@')) {
    try {
      return { kind: 'domain', domain: prepDomain(token.slice(2)) };
    } catch (err) {
      return `invalid domain in "${token}": ${(err as Error).message}`;
    }
  }
  if (token.includes('*')) return `"${token}": "*" is only allowed alone (everyone) or as "*@domain" (a whole domain)`;
  let jid: Jid;
  try {
    jid = Jid.parse(token);
  } catch (err) {
    return `invalid JID "${token}": ${(err as Error).message}`;
  }
  if (jid.resource) return `"${token}": expected a bare JID (no /resource)`;
  if (!jid.local) return `"${token}": expected user@domain; write "*@${jid.domain}" for everyone at that domain`;
  return { kind: 'user', jid: jid.bare };
}

/**
 * Parses the text of one file. `name` is what errors show (the path relative to the ACL
 * directory). Throws AclSyntaxError at the first error.
 */
export function parseAclFile(name: string, text: string, kind: 'service'): ParsedAclFile<'allow' | 'deny'>;
export function parseAclFile(name: string, text: string, kind: 'venue'): ParsedAclFile<VenueRight>;
export function parseAclFile(name: string, text: string, kind: FileKind): ParsedAclFile;
export function parseAclFile(name: string, text: string, kind: FileKind): ParsedAclFile {
  if (Buffer.byteLength(text, 'utf8') > MAX_FILE_BYTES) throw new AclSyntaxError(name, 0, `file larger than ${MAX_FILE_BYTES} bytes`);
  const entries: AclEntry[] = [];
  const seen = new Map<string, number>();
  const groups = new Set<string>();
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const body = stripComment(lines[i] ?? '').trim();
    if (!body) continue;
    // Subjects are separated by whitespace and/or commas: "allow alice@x, bob@x" reads naturally.
    const [keyword = '', ...tokens] = body.split(/[\s,]+/).filter(Boolean);
    let grant: Grant;
    if (kind === 'service') {
      const k = keyword.toLowerCase();
      if (k !== 'allow' && k !== 'deny') throw new AclSyntaxError(name, lineNo, `expected "allow" or "deny" at the start of the line, found "${keyword}"`);
      grant = k;
    } else {
      const k = keyword.toUpperCase() as VenueRight;
      if (!VENUE_RIGHTS.includes(k)) throw new AclSyntaxError(name, lineNo, `expected MANAGE, WRITE, READ or NONE at the start of the line, found "${keyword}"`);
      grant = k;
    }
    if (tokens.length === 0) {
      throw new AclSyntaxError(name, lineNo, `expected at least one subject after "${keyword}": user@domain, @group, *@domain or *`);
    }
    for (const token of tokens) {
      const subject = parseSubject(token);
      if (typeof subject === 'string') throw new AclSyntaxError(name, lineNo, subject);
      const key = subjectKey(subject);
      const first = seen.get(key);
      // Two entries for one subject would need a tie rule nobody remembers: refuse them.
      if (first !== undefined) throw new AclSyntaxError(name, lineNo, `${key} is already listed at line ${first}`);
      seen.set(key, lineNo);
      if (subject.kind === 'group') groups.add(subject.name);
      entries.push({ subject, grant, line: lineNo });
    }
  }
  return { kind, entries, groups: [...groups] };
}

/**
 * The room a file under rooms/ governs, from its name without ".acl": `<room>@<service>` (one room)
 * or `<room>` (that room name on every conference service), normalized like a JID.
 */
export function roomKeyFromFileName(base: string): { key: string } | { error: string } {
  const decoded = safeDecode(base);
  if (decoded === null) return { error: 'file name: invalid %-escape' };
  try {
    if (decoded.includes('@')) {
      const j = Jid.parse(decoded);
      if (j.resource || !j.local) return { error: `file name: expected <room>@<service>.acl or <room>.acl, found "${base}.acl"` };
      return { key: j.bare };
    }
    return { key: prepLocal(decoded) };
  } catch (err) {
    return { error: `file name: invalid room name "${decoded}": ${(err as Error).message}` };
  }
}

/** Node names may hold "/" and other characters a file name cannot: files use %-escapes. */
export function safeDecode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}
