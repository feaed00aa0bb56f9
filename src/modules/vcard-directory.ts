// XEP-0054 vcard-temp for users of a host whose accounts live in an LDAP directory (issue 8): the
// vCard is built from the user's entry (§3.1/§3.3 answers), with the elements of the XEP-0054 DTD
// (FN, N/GIVEN/FAMILY, EMAIL/INTERNET/PREF/USERID, TEL/WORK/VOICE/NUMBER, TITLE, ORG/ORGNAME/ORGUNIT,
// PHOTO/TYPE/BINVAL) mapped from attributes (hosts.*.ldap.vcard). The PHOTO is the jpegPhoto bytes
// as base64, so XEP-0153 hashes (src/modules/avatars.ts reads vCards through vcard.edit) work as
// for a stored one. Look-ups go through ctx.directory(host).search with a cache key, so they age
// with the directory cache. A helper of the vcard module, not a module of its own.
import { Element } from 'ltx';
import type { ModuleHost } from '../core/module.js';
import type { HostConfig } from '../core/config.js';
import { escapeFilterValue, type DirectoryEntry } from '../core/directory.js';
import { stanzaError } from '../xmpp/errors.js';
import type { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';

type VcardMap = NonNullable<HostConfig['ldap']>['vcard'];

/** First value of an attribute, whatever case the directory spells its name in. */
function value(e: DirectoryEntry, name: string): string | null {
  const key = Object.keys(e.attributes).find((k) => k.toLowerCase() === name.toLowerCase());
  const v = key ? e.attributes[key]?.[0] : undefined;
  return v === undefined || v.trim() === '' ? null : v;
}

function binary(e: DirectoryEntry, name: string): Buffer | null {
  const key = Object.keys(e.binary).find((k) => k.toLowerCase() === name.toLowerCase());
  const v = key ? e.binary[key]?.[0] : undefined;
  return v && v.length > 0 ? v : null;
}

/** The vCard of one entry; elements whose attributes are absent are left out. */
export function vcardFromEntry(e: DirectoryEntry, map: VcardMap, displayNameAttribute: string): Element {
  const v = new Element('vCard', { xmlns: NS.VCARD });
  const fn = value(e, map.fullName ?? displayNameAttribute);
  if (fn) v.c('FN').t(fn);
  const given = value(e, map.given);
  const family = value(e, map.family);
  if (given || family) {
    const n = v.c('N');
    if (family) n.c('FAMILY').t(family);
    if (given) n.c('GIVEN').t(given);
  }
  // In the order of the XEP-0054 DTD (FN, N, PHOTO, TEL, EMAIL, TITLE, ORG).
  const photo = binary(e, map.photo);
  if (photo) {
    const p = v.c('PHOTO');
    p.c('TYPE').t('image/jpeg'); // jpegPhoto (RFC 2798) holds JPEG by definition
    p.c('BINVAL').t(photo.toString('base64'));
  }
  const tel = value(e, map.phone);
  if (tel) {
    const t = v.c('TEL');
    t.c('WORK');
    t.c('VOICE');
    t.c('NUMBER').t(tel);
  }
  const mail = value(e, map.email);
  if (mail) {
    const m = v.c('EMAIL');
    m.c('INTERNET');
    m.c('PREF');
    m.c('USERID').t(mail);
  }
  const title = value(e, map.title);
  if (title) v.c('TITLE').t(title);
  const org = value(e, map.orgName);
  const unit = value(e, map.orgUnit);
  if (org || unit) {
    const o = v.c('ORG');
    // The DTD requires ORGNAME inside ORG; an entry with only a unit repeats the unit there.
    o.c('ORGNAME').t(org ?? unit ?? '');
    if (unit && org) o.c('ORGUNIT').t(unit);
  }
  return v;
}

/** Vcard elements the directory supplied win over the user's own ones (localEdits). */
export function mergeVcards(fromDirectory: Element, local: Element | null): Element {
  if (!local) return fromDirectory;
  const taken = new Set(fromDirectory.getChildElements().map((c) => c.name));
  const out = new Element('vCard', { xmlns: NS.VCARD });
  for (const c of local.getChildElements()) if (!taken.has(c.name)) out.cnode(c);
  for (const c of fromDirectory.getChildElements()) out.cnode(c);
  return out;
}

export interface DirectoryVcards {
  /** Whether `host` keeps its users' vCards in the directory. */
  covers(host: string): boolean;
  /** Whether users of `host` may store their own vCard next to the directory's. */
  localEdits(host: string): boolean;
  /**
   * The directory vCard of a user, or null when the host has no directory or the directory has no
   * such user (the vcard module then answers as usual). A directory outage is remote-server-timeout
   * (RFC 6120 §8.3.3.17: a service needed to fulfil the request did not answer; type wait).
   */
  lookup(user: Jid): Promise<Element | null>;
}

export function directoryVcards(ctx: ModuleHost): DirectoryVcards {
  const hostCfg = (host: string) => ctx.config.hosts.find((h) => h.domain === host);
  return {
    covers: (host) => !!ctx.directory(host) && !!hostCfg(host)?.ldap,
    localEdits: (host) => hostCfg(host)?.ldap?.vcard.localEdits ?? false,
    async lookup(user) {
      const dir = ctx.directory(user.domain);
      const cfg = hostCfg(user.domain)?.ldap;
      if (!dir || !cfg || !user.local) return null;
      const map = cfg.vcard;
      const attrs = [dir.userAttribute, map.fullName ?? dir.displayNameAttribute, map.given, map.family, map.email, map.phone, map.title, map.orgName, map.orgUnit];
      let entries: DirectoryEntry[];
      try {
        entries = await dir.search({
          filter: `(&${dir.userFilter}(${dir.userAttribute}=${escapeFilterValue(user.local)}))`,
          attributes: [...new Set(attrs)],
          binaryAttributes: [map.photo],
          sizeLimit: 2,
          cacheKey: `vcard:${user.local}`,
        });
      } catch (err) {
        ctx.log.warn({ err, user: user.bare }, 'directory vCard look-up failed');
        throw stanzaError('remote-server-timeout', 'the user directory is not answering');
      }
      // Exactly one entry, and the one for this username (the directory matches case-insensitively).
      const [e] = entries;
      if (entries.length !== 1 || !e || value(e, dir.userAttribute)?.toLowerCase() !== user.local.toLowerCase()) return null;
      return vcardFromEntry(e, map, dir.displayNameAttribute);
    },
  };
}
