// JIDs (RFC 7622). Parley applies a practical subset of PRECIS: localparts are NFKC-normalized and
// case-folded (UsernameCaseMapped), domains are lower-cased IDNA U-labels, resources are NFC
// (OpaqueString). Characters RFC 7622 §3.3.1 forbids in localparts and every control character
// are refused; each part is limited to 1023 bytes.
import { domainToASCII, domainToUnicode } from 'node:url';

const LOCAL_FORBIDDEN = /["&'/:<>@\s\u0000-\u001f\u007f-\u009f]/u;
const RESOURCE_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f]/u;
const MAX_PART = 1023;
const CACHE_SIZE = 16384;
const cache = new Map<string, Jid>();
/** Plain ASCII host names need no IDNA processing (the common case, and the URL parser is not cheap). */
const SIMPLE_DOMAIN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

export class JidError extends Error {
  override name = 'JidError';
}

export class Jid {
  readonly bare: string;
  readonly full: string;

  private constructor(
    readonly local: string,
    readonly domain: string,
    readonly resource: string,
  ) {
    this.bare = local ? `${local}@${domain}` : domain;
    this.full = resource ? `${this.bare}/${resource}` : this.bare;
  }

  static of(local: string, domain: string, resource = ''): Jid {
    return new Jid(prepLocal(local), prepDomain(domain), prepResource(resource));
  }

  /** Parses and normalizes; throws JidError on a malformed JID. */
  static parse(s: string): Jid {
    // Every routed stanza parses its 'to' and 'from': Jids are immutable, so remember recent ones.
    const hit = cache.get(s);
    if (hit) return hit;
    const jid = Jid.parseUncached(s);
    if (cache.size >= CACHE_SIZE) cache.clear();
    cache.set(s, jid);
    return jid;
  }

  private static parseUncached(s: string): Jid {
    if (typeof s !== 'string' || s.length === 0) throw new JidError('empty JID');
    const slash = s.indexOf('/');
    const head = slash === -1 ? s : s.slice(0, slash);
    const resource = slash === -1 ? '' : s.slice(slash + 1);
    if (slash !== -1 && resource === '') throw new JidError('empty resourcepart');
    const at = head.lastIndexOf('@');
    const local = at === -1 ? '' : head.slice(0, at);
    if (at !== -1 && local === '') throw new JidError('empty localpart');
    const domain = at === -1 ? head : head.slice(at + 1);
    return Jid.of(local, domain, resource);
  }

  /** Parses, returning null instead of throwing. */
  static tryParse(s: string | undefined | null): Jid | null {
    if (!s) return null;
    try {
      return Jid.parse(s);
    } catch {
      return null;
    }
  }

  get isBare(): boolean {
    return this.resource === '';
  }

  toBare(): Jid {
    return this.resource ? new Jid(this.local, this.domain, '') : this;
  }

  withResource(resource: string): Jid {
    return new Jid(this.local, this.domain, prepResource(resource));
  }

  equals(other: Jid | null | undefined): boolean {
    return !!other && other.full === this.full;
  }

  toString(): string {
    return this.full;
  }
}

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

export function prepLocal(local: string): string {
  if (local === '') return '';
  const out = local.normalize('NFKC').toLowerCase();
  if (LOCAL_FORBIDDEN.test(out)) throw new JidError('forbidden character in localpart');
  if (byteLength(out) > MAX_PART) throw new JidError('localpart too long');
  return out;
}

export function prepDomain(domain: string): string {
  let d = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  if (d === '') throw new JidError('empty domainpart');
  if (d.startsWith('[') && d.endsWith(']')) return d.toLowerCase(); // IPv6 literal
  if (d.length <= MAX_PART && SIMPLE_DOMAIN.test(d) && !d.includes('xn--')) return d;
  const ascii = domainToASCII(d.normalize('NFC'));
  if (!ascii) throw new JidError('invalid domainpart');
  d = domainToUnicode(ascii);
  if (d === '' || /[\s@/]/u.test(d)) throw new JidError('invalid domainpart');
  if (byteLength(d) > MAX_PART) throw new JidError('domainpart too long');
  return d;
}

export function prepResource(resource: string): string {
  if (resource === '') return '';
  const out = resource.normalize('NFC');
  if (RESOURCE_FORBIDDEN.test(out)) throw new JidError('forbidden character in resourcepart');
  if (byteLength(out) > MAX_PART) throw new JidError('resourcepart too long');
  return out;
}

// XEP-0106 JID Escaping: a directory value such as alice@example.com or "Jo Smith" becomes a
// localpart (alice\40example.com, jo\20smith) and back. A backslash is escaped only where it
// would otherwise read as an escape sequence (§4.2).
const ESCAPES: Record<string, string> = { ' ': '\\20', '"': '\\22', '&': '\\26', "'": '\\27', '/': '\\2f', ':': '\\3a', '<': '\\3c', '>': '\\3e', '@': '\\40' };
const SEQUENCE = /\\(20|22|26|27|2f|3a|3c|3e|40|5c)/gi;

export function escapeLocalpart(value: string): string {
  return value.replace(/\\(?=(?:20|22|26|27|2f|3a|3c|3e|40|5c))/gi, '\\5c').replace(/[ "&'/:<>@]/g, (c) => ESCAPES[c] as string);
}

export function unescapeLocalpart(local: string): string {
  return local.replace(SEQUENCE, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}
