// XEP-0398 User Avatar to vCard-Based Avatars Conversion (v1.0) with XEP-0153 vCard-Based Avatars
// (v1.1) on the server side:
//  - §2 discovery: urn:xmpp:pep-vcard-conversion:0 on the account's disco#info;
//  - §3.1 PEP -> vCard: when the owner publishes XEP-0084 metadata (§4.2) naming a PNG/JPEG/GIF
//    whose data (§4.1) is in the urn:xmpp:avatar:data node and whose SHA-1 matches the id, the
//    vCard's PHOTO becomes TYPE + BINVAL; metadata without <info/> (XEP-0084 §4.5 "disabling")
//    removes the PHOTO;
//  - §3.2 vCard -> PEP: when a client stores a vCard with a PHOTO BINVAL, the data and metadata
//    nodes get it (id = SHA-1 of the bytes; bytes, type, and width/height read from the image
//    header); a vCard whose PHOTO was removed disables the PEP avatar;
//  - §4 presence: every available presence a client sends (broadcast and directed) carries
//    <x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x> of the stored vCard photo (XEP-0153
//    §3.1), or an empty <photo/> when there is none (XEP-0153 §4.1); what the client put there is
//    replaced unless it already says the same.
//
// No loops: the PEP module fires pep.published only for iq publishes, and the vCard module fires
// vcard.changed only for iq sets; this module writes through pep.publish and vcard.edit, which fire
// neither. Same-hash conversions are skipped too, so a client that updates both sides (Gajim) does
// not cause a second round of notifications.
//
// Bad input never fails the original request: the vCard set or PEP publish is answered as before
// and the conversion is skipped with a log line (malformed base64, non-image type, SHA-1 mismatch,
// image above maxImageBytes, the other store's own size limit). Refusing the set would break
// clients that work against servers without this XEP, and XEP-0054 treats the vCard as opaque.
//
// Not done: XEP-0084 avatars published only by URL (<info url=.../>) are not fetched; a retract or
// node deletion (instead of an empty metadata publish) is not converted; a changed avatar is not
// re-broadcast in presence by the server: the hash is added to the client's next presence.
import { createHash } from 'node:crypto';
import { clone, Element, parse } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import type { Jid } from '../xmpp/jid.js';

const NS_CONVERSION = 'urn:xmpp:pep-vcard-conversion:0';
const NS_DATA = 'urn:xmpp:avatar:data';
const NS_METADATA = 'urn:xmpp:avatar:metadata';
const NS_VCARD = 'vcard-temp';
const NS_VCARD_UPDATE = 'vcard-temp:x:update';
/** What vCard clients can show (XEP-0153 §3.1) and XEP-0084 §4.2.1 names. */
const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif']);

/** Photo of a stored vCard: no PHOTO, a PHOTO by URL only (EXTVAL), or inline data. */
type Photo = { kind: 'none' } | { kind: 'external' } | { kind: 'inline'; binval: string; type: string | null };

export interface Image {
  bytes: Buffer;
  base64: string;
  type: string;
  hash: string;
  width?: number;
  height?: number;
}

export default defineModule({
  name: 'avatars',
  xeps: ['0398', '0153'],
  options: z
    .object({
      maxImageBytes: z.number().int().min(1).default(512 * 1024).describe('Largest avatar (decoded bytes) converted between PEP and vCard'),
    })
    .strict(),
  setup(ctx) {
    const maxImageBytes = ctx.options.maxImageBytes;
    const pubsub = ctx.storage.pubsub;
    /**
     * bare JID -> SHA-1 of the stored vCard photo ('' = none, null = unreadable: leave presence
     * alone). Kept only while the account has sessions, so it does not grow with the user base.
     */
    const hashes = new Map<string, string | null>();

    ctx.addFeature(NS_CONVERSION, 'account');

    /** The stored vCard; undefined when it cannot be read now (the directory is down). */
    async function readVcard(user: Jid): Promise<Element | null | undefined> {
      const ev: { user: Jid; vcard?: Element | null; unavailable?: boolean } = { user };
      if (!(await ctx.fire('vcard.edit', ev))) return null;
      return ev.unavailable ? undefined : (ev.vcard ?? null);
    }

    async function photoHash(user: Jid): Promise<string | null> {
      const cached = hashes.get(user.bare);
      if (cached !== undefined) return cached;
      const vcard = await readVcard(user);
      if (vcard === undefined) return null; // unknown, not "no photo": leave presence alone, ask again next time
      const photo = photoOf(vcard);
      let hash: string | null = '';
      if (photo.kind === 'external') hash = null; // XEP-0153 hashes bytes; there are none here
      else if (photo.kind === 'inline') {
        const bytes = decodeBase64(photo.binval);
        hash = bytes ? sha1(bytes) : null;
      }
      if (ctx.sessions.count(user.bare) > 0) hashes.set(user.bare, hash);
      return hash;
    }

    /** The current XEP-0084 metadata payload, if any. */
    async function currentMetadata(user: Jid): Promise<Element | null> {
      const [last] = await pubsub.getItems(user.bare, NS_METADATA, { max: 1 });
      if (!last) return null;
      try {
        const el = parse(last.payload);
        return el.name === 'metadata' ? el : null;
      } catch {
        return null;
      }
    }

    // ---- §3.2 vCard -> PEP ----------------------------------------------------------------------

    async function publishAvatar(user: Jid, image: Image): Promise<void> {
      const current = await currentMetadata(user);
      if (current?.getChildren('info').some((i) => i.attrs.id?.toLowerCase() === image.hash)) return; // already there
      const data = new Element('item', { id: image.hash });
      data.c('data', { xmlns: NS_DATA }).t(image.base64);
      const meta = new Element('item', { id: image.hash });
      meta.c('metadata', { xmlns: NS_METADATA }).c('info', {
        id: image.hash,
        bytes: String(image.bytes.length),
        type: image.type,
        width: image.width === undefined ? undefined : String(image.width),
        height: image.height === undefined ? undefined : String(image.height),
      });
      // XEP-0084 §4.1: data first, so that a client seeing the metadata can fetch it.
      if (!(await ctx.fire('pep.publish', { owner: user, node: NS_DATA, item: data }))) return;
      await ctx.fire('pep.publish', { owner: user, node: NS_METADATA, item: meta });
      ctx.log.debug({ user: user.bare, hash: image.hash }, 'vCard avatar published to PEP');
    }

    async function disableAvatar(user: Jid): Promise<void> {
      const current = await currentMetadata(user);
      if (!current || current.getChildren('info').length === 0) return; // nothing to disable
      const item = new Element('item');
      item.c('metadata', { xmlns: NS_METADATA });
      await ctx.fire('pep.publish', { owner: user, node: NS_METADATA, item });
    }

    ctx.hook('vcard.changed', async ({ user, previous, vcard }) => {
      hashes.delete(user.bare);
      try {
        const photo = photoOf(vcard);
        if (photo.kind === 'none') {
          // Only a PHOTO the user removed disables the PEP avatar: a vCard that never had one
          // (a client that only edits names) must not wipe an avatar set through PEP.
          if (photoOf(previous).kind !== 'none') await disableAvatar(user);
          return undefined;
        }
        if (photo.kind === 'external') {
          ctx.log.info({ user: user.bare }, 'vCard PHOTO by URL only: not converted to PEP');
          return undefined;
        }
        const image = checkImage(photo.binval, photo.type, maxImageBytes);
        if (typeof image === 'string') {
          ctx.log.info({ user: user.bare, reason: image }, 'vCard PHOTO not converted to PEP');
          return undefined;
        }
        await publishAvatar(user, image);
      } catch (err) {
        // The vCard is stored and the client gets its result whatever happens here.
        ctx.log.warn({ err, user: user.bare }, 'vCard to PEP avatar conversion failed');
      }
      return undefined;
    });

    // ---- §3.1 PEP -> vCard ----------------------------------------------------------------------

    async function storePhoto(user: Jid, image: Image | null): Promise<void> {
      const ev: { user: Jid; update: (current: Element | null) => Element | null | undefined; vcard?: Element | null; unavailable?: boolean } = {
        user,
        update: (current) => {
          const had = photoOf(current);
          if (image === null) {
            if (!current || had.kind === 'none') return undefined;
            return withPhoto(current, null);
          }
          if (had.kind === 'inline') {
            const bytes = decodeBase64(had.binval);
            if (bytes && sha1(bytes) === image.hash) return undefined; // the vCard already has it
          }
          return withPhoto(current, image);
        },
      };
      if (!(await ctx.fire('vcard.edit', ev)) || ev.unavailable) return;
      hashes.delete(user.bare);
      ctx.log.debug({ user: user.bare, hash: image?.hash ?? '' }, 'PEP avatar stored in the vCard');
    }

    ctx.hook('pep.published', async ({ owner, node, item }) => {
      if (node !== NS_METADATA) return undefined;
      try {
        const metadata = item.getChild('metadata', NS_METADATA);
        if (!metadata) return undefined;
        const infos = metadata.getChildren('info');
        if (infos.length === 0) {
          await storePhoto(owner, null);
          return undefined;
        }
        const info = infos.find((i) => IMAGE_TYPES.has(String(i.attrs.type).toLowerCase()) && !i.attrs.url && i.attrs.id);
        if (!info) {
          ctx.log.info({ user: owner.bare }, 'PEP avatar has no PNG/JPEG/GIF in PEP: not converted to the vCard');
          return undefined;
        }
        const id = String(info.attrs.id).toLowerCase();
        const declared = Number(info.attrs.bytes);
        if (Number.isFinite(declared) && declared > maxImageBytes) {
          ctx.log.info({ user: owner.bare, bytes: declared }, 'PEP avatar too large: not converted to the vCard');
          return undefined;
        }
        const [dataItem] = await pubsub.getItems(owner.bare, NS_DATA, { ids: [String(info.attrs.id)] });
        if (!dataItem) {
          ctx.log.info({ user: owner.bare, id }, 'PEP avatar data missing: not converted to the vCard');
          return undefined;
        }
        let data: Element;
        try {
          data = parse(dataItem.payload);
        } catch {
          ctx.log.info({ user: owner.bare, id }, 'PEP avatar data unreadable: not converted to the vCard');
          return undefined;
        }
        if (data.name !== 'data' || data.attrs.xmlns !== NS_DATA) return undefined;
        const image = checkImage(data.getText(), String(info.attrs.type), maxImageBytes);
        if (typeof image === 'string' || image.hash !== id) {
          ctx.log.info({ user: owner.bare, id, reason: typeof image === 'string' ? image : 'SHA-1 does not match the item id' }, 'PEP avatar not converted to the vCard');
          return undefined;
        }
        await storePhoto(owner, image);
      } catch (err) {
        // The publish has succeeded; a failed conversion (vCard size limit...) is only logged.
        ctx.log.warn({ err, user: owner.bare }, 'PEP to vCard avatar conversion failed');
      }
      return undefined;
    });

    // ---- §4 / XEP-0153 presence -----------------------------------------------------------------

    ctx.hook(
      'c2s.stanza',
      async ({ session, stanza }) => {
        // Above the presence module (0), which broadcasts and remembers the stanza as it is then.
        if (stanza.name !== 'presence' || stanza.attrs.type !== undefined || !session.jid) return undefined;
        const hash = await photoHash(session.jid.toBare());
        if (hash === null) return undefined;
        const sent = stanza.getChildren('x', NS_VCARD_UPDATE);
        if (sent.length === 1 && sent[0]?.getChildText('photo')?.trim().toLowerCase() === hash) return undefined; // the client's says the same
        stanza.children = stanza.children.filter((c) => typeof c === 'string' || c.name !== 'x' || c.attrs.xmlns !== NS_VCARD_UPDATE);
        const photo = stanza.c('x', { xmlns: NS_VCARD_UPDATE }).c('photo');
        if (hash) photo.t(hash);
        return undefined;
      },
      10,
    );

    ctx.hook('session.closed', ({ session }) => {
      if (session.jid && ctx.sessions.count(session.jid.bare) === 0) hashes.delete(session.jid.bare);
      return undefined;
    });

    ctx.onUnload(() => hashes.clear());
  },
});

// ---- helpers ----------------------------------------------------------------------------------

function sha1(bytes: Buffer): string {
  return createHash('sha1').update(bytes).digest('hex');
}

function photoOf(vcard: Element | null): Photo {
  const photo = vcard?.getChild('PHOTO');
  if (!photo) return { kind: 'none' };
  const binval = photo.getChildText('BINVAL');
  if (binval === null || binval.trim() === '') return photo.getChild('EXTVAL') ? { kind: 'external' } : { kind: 'none' };
  return { kind: 'inline', binval, type: photo.getChildText('TYPE')?.trim() || null };
}

/** Strict base64 (RFC 4648 §4; whitespace such as MIME line breaks allowed); null if malformed or empty. */
export function decodeBase64(text: string): Buffer | null {
  const s = text.replace(/[\s]+/g, '');
  if (s.length === 0 || s.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(s)) return null;
  return Buffer.from(s, 'base64');
}

/** Decodes and checks an avatar; a string says why it is not converted. */
export function checkImage(base64: string, declaredType: string | null, maxBytes: number): Image | string {
  const compact = base64.replace(/[\s]+/g, '');
  // Refuse before decoding: 4 base64 characters carry 3 bytes.
  if (Math.floor(compact.length / 4) * 3 - 2 > maxBytes) return `image larger than ${maxBytes} bytes`;
  const bytes = decodeBase64(compact);
  if (!bytes) return 'malformed base64';
  if (bytes.length > maxBytes) return `image larger than ${maxBytes} bytes`;
  // The bytes decide, not the client's label (many send image/jpg, or none): every PNG, JPEG and
  // GIF starts with its signature, and anything else is not shown by vCard clients anyway.
  const type = sniffType(bytes);
  if (!type || !IMAGE_TYPES.has(type)) return `not a PNG, JPEG or GIF image (labelled ${declaredType ?? 'nothing'})`;
  return { bytes, base64: bytes.toString('base64'), type, hash: sha1(bytes), ...dimensions(bytes, type) };
}

function sniffType(b: Buffer): string | null {
  if (b.length >= 8 && b.readUInt32BE(0) === 0x89504e47 && b.readUInt32BE(4) === 0x0d0a1a0a) return 'image/png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg';
  if (b.length >= 6 && (b.toString('latin1', 0, 6) === 'GIF87a' || b.toString('latin1', 0, 6) === 'GIF89a')) return 'image/gif';
  return null;
}

/** Width and height from the image header (XEP-0084 §4.2.1 RECOMMENDS them); {} if not found. */
export function dimensions(b: Buffer, type: string): { width?: number; height?: number } {
  if (type === 'image/png') {
    // PNG: signature, then the IHDR chunk (length, "IHDR", width, height).
    if (b.length >= 24 && b.toString('latin1', 12, 16) === 'IHDR') return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
    return {};
  }
  if (type === 'image/gif') return b.length >= 10 ? { width: b.readUInt16LE(6), height: b.readUInt16LE(8) } : {};
  // JPEG: walk the marker segments up to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return {};
    const marker = b[i + 1] as number;
    if (marker === 0xff) {
      i++;
      continue;
    }
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { height: b.readUInt16BE(i + 5), width: b.readUInt16BE(i + 7) };
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd9)) {
      i += 2; // markers without a length
      continue;
    }
    i += 2 + b.readUInt16BE(i + 2);
  }
  return {};
}

/** `vcard` with its PHOTO replaced by `image` (or removed); null when nothing is left. */
function withPhoto(vcard: Element | null, image: Image | null): Element | null {
  const out = new Element('vCard', { xmlns: NS_VCARD });
  for (const c of vcard?.getChildElements() ?? []) if (c.name !== 'PHOTO') out.cnode(clone(c));
  if (image) {
    const photo = out.c('PHOTO');
    photo.c('TYPE').t(image.type);
    photo.c('BINVAL').t(image.base64);
  }
  return out.getChildElements().length ? out : null;
}
