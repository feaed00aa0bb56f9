// Room vCards and avatars: XEP-0486 MUC Avatars (v0.1.0) over XEP-0054 vcard-temp on the room JID.
//  - §3.1 the service and its rooms advertise vcard-temp;
//  - §3.2 owners publish the room's vCard with an iq set (others: forbidden); an empty <vCard/>
//    removes it; the room then broadcasts a status 104 configuration change to its occupants (the
//    XEP-0153 presence from the bare room JID that some servers send is not: §5.2 discourages it);
//  - §3.3 disco#info carries muc#roominfo_avatarhash (text-multi, the SHA-1 of each PHOTO's
//    BINVAL bytes, §5.1), absent when there is no avatar (§4);
//  - §3.4 anyone may retrieve the vCard (an empty <vCard/> when none is set: XEP-0054 §3.1).
// The vCard is kept with the room's configuration (RoomConfig.vcard, so a persistent room stores it
// in its existing record: no migration) and is capped in size (the option maxVcardBytes).
import { createHash } from 'node:crypto';
import { Element, parse } from 'ltx';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import type { Jid } from '../../xmpp/jid.js';
import { NS } from '../../xmpp/ns.js';
import { standalone } from '../../xmpp/stanza.js';
import type { Logger } from '../../core/logger.js';
import type { Affiliation, Room } from './room.js';

const NS_ROOMINFO = 'http://jabber.org/protocol/muc#roominfo';

export interface RoomVcardHost {
  log: Logger;
  rightsOf(room: Room, bare: string): { aff: Affiliation; visitor: boolean };
  /** Stores a persistent room's record (its configuration holds the vCard). */
  persist(room: Room): Promise<void>;
  /** XEP-0045 §10.2.1 status message to every occupant. */
  statusMessage(room: Room, codes: number[]): void;
}

/** Strict base64 (RFC 4648 §4, whitespace allowed); null when malformed or empty. */
function decodeBase64(text: string): Buffer | null {
  const s = text.replace(/\s+/g, '');
  if (s.length === 0 || s.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(s)) return null;
  return Buffer.from(s, 'base64');
}

/** §5.1: one SHA-1 (hex) per PHOTO with inline data; throws not-acceptable when a BINVAL is not base64. */
export function avatarHashes(vcard: Element): string[] {
  const out: string[] = [];
  for (const photo of vcard.getChildren('PHOTO')) {
    const binval = photo.getChildText('BINVAL');
    if (binval === null) continue;
    const bytes = decodeBase64(binval);
    if (!bytes) throw new StanzaError('modify', 'not-acceptable', 'PHOTO BINVAL is not base64');
    out.push(createHash('sha1').update(bytes).digest('hex'));
  }
  return [...new Set(out)];
}

export function roomVcard(host: RoomVcardHost, maxBytes: number) {
  /** Hashes of the stored vCard, recomputed only when it changes. */
  const cache = new WeakMap<Room, { xml: string; hashes: string[] }>();

  function hashesOf(room: Room): string[] {
    const xml = room.config.vcard;
    if (!xml) return [];
    const hit = cache.get(room);
    if (hit && hit.xml === xml) return hit.hashes;
    let hashes: string[] = [];
    try {
      hashes = avatarHashes(parse(xml));
    } catch (err) {
      host.log.warn({ err, room: room.jid }, 'muc: stored room vCard unreadable');
    }
    cache.set(room, { xml, hashes });
    return hashes;
  }

  return {
    /** A vcard-temp iq to the room JID. */
    async iq(room: Room, type: 'get' | 'set', payload: Element, from: Jid): Promise<Element | undefined> {
      if (room.locked && room.creator !== from.bare) throw new StanzaError('cancel', 'item-not-found');
      if (type === 'get') {
        if (room.config.vcard) {
          try {
            return parse(room.config.vcard);
          } catch (err) {
            host.log.warn({ err, room: room.jid }, 'muc: stored room vCard unreadable');
          }
        }
        return new Element('vCard', { xmlns: NS.VCARD });
      }
      if (host.rightsOf(room, from.bare).aff !== 'owner') throw new StanzaError('auth', 'forbidden', 'only owners may set the room vCard');
      let xml = '';
      if (payload.getChildElements().length > 0) {
        xml = standalone(payload).toString();
        if (Buffer.byteLength(xml, 'utf8') > maxBytes) throw stanzaError('not-acceptable', `vCard larger than ${maxBytes} bytes`);
        avatarHashes(payload); // refuses a PHOTO whose data is not base64
      }
      room.config = { ...room.config, vcard: xml };
      await host.persist(room);
      // §3.2: occupants learn of the change as of a configuration change (they refetch disco#info).
      if (!room.locked) host.statusMessage(room, [104]);
      return undefined;
    },

    /** §3.1/§3.3: the vcard-temp feature (before the forms) and the avatar hash in muc#roominfo. */
    extendInfo(room: Room, q: Element): void {
      const forms = q.getChildren('x', NS.DATA_FORMS);
      const at = q.children.findIndex((c) => typeof c !== 'string' && c.name === 'x');
      const feature = new Element('feature', { var: NS.VCARD });
      feature.parent = q;
      q.children.splice(at === -1 ? q.children.length : at, 0, feature);
      const hashes = hashesOf(room);
      if (hashes.length === 0) return; // §4: no field without an avatar
      const info = forms.find((f) => f.getChildren('field').some((fl) => fl.attrs.var === 'FORM_TYPE' && fl.getChildText('value') === NS_ROOMINFO));
      if (!info) return;
      const field = info.c('field', { var: 'muc#roominfo_avatarhash', type: 'text-multi', label: 'Avatar hash' });
      for (const h of hashes) field.c('value').t(h);
    },
  };
}

export type RoomVcard = ReturnType<typeof roomVcard>;
