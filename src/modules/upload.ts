// XEP-0363 HTTP File Upload (urn:xmpp:http:upload:0, v1.1): §2 discovering support (disco#items
// of the host lists the service; its disco#info carries identity store/file, the feature and the
// max-file-size form), §4 requesting a slot, §5 upload purposes 'message' (the default) and
// 'ephemeral' (expire-before bounds the file's lifetime), §6 error conditions (file-too-large with
// max-file-size, resource-constraint for the quota, forbidden for non-local requesters), §7 the
// upload itself (Content-Length must equal the slot's size, a Content-Type announced beforehand
// must match, 201 on success), §8 implementation notes (300 s PUT validity, CORS) and §9 security
// (unguessable URLs, a Content-Security-Policy on downloads).
//
// The service is `<subdomain>.<host>` for every local host, registered with `ctx.service`: the
// router hands it the stanzas for those domains (after the `filetransfer` entitlement check) and
// this module answers them itself. That keeps the service self-contained.
//
// Slots: a random 192-bit id, which is also the file's name on disk, so that nothing a client
// chooses ever reaches a file system path (the file name is only the last URL segment and is
// compared with the stored one). The PUT URL carries its deadline and an HMAC-SHA-256 over slot,
// name, size, type and deadline with a key kept in the upload directory (every node serving the
// files shares that directory, hence the key; `secretFile` overrides it). Uploads stream into a
// temporary file that is linked into place only once complete (link fails if the target exists,
// so two PUTs racing on different nodes cannot both win); on any error the temporary file goes.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { link, mkdir, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Request, RequestHandler, Response } from 'express';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import type { UploadRecord } from '../storage/types.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import type { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { answerServiceIq } from '../xmpp/service-iq.js';

export const NS_UPLOAD = 'urn:xmpp:http:upload:0';
const NS_PURPOSE = 'urn:xmpp:http:upload:purpose:0';
const NS_XDATA = 'jabber:x:data';

const MIB = 1024 * 1024;
/** Longest file name kept, in code points (longer ones are cut, keeping the extension). */
const MAX_NAME_CHARS = 200;
const MAX_TYPE_CHARS = 127;
/** Slot ids: 24 random bytes, base64url. */
const SLOT_RE = /^[A-Za-z0-9_-]{32}$/;
/** Leftover temporary files (a crash mid-upload) older than this are deleted by the sweep. */
const STALE_TEMP_MS = 3_600_000;
const SWEEP_BATCH = 500;

/**
 * Types served inline (displayed by the browser). Everything else is served as an attachment; SVG,
 * HTML and XML never inline, since they can carry script.
 */
const INLINE_TYPES = new Set([
  'image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/avif', 'image/bmp',
  'audio/mpeg', 'audio/ogg', 'audio/opus', 'audio/aac', 'audio/mp4', 'audio/webm', 'audio/wav', 'audio/flac', 'audio/x-m4a',
  'video/mp4', 'video/webm', 'video/ogg', 'video/quicktime', 'video/3gpp',
  'text/plain',
]);
/** Types served as announced (as attachments unless inline): the rest go out as application/octet-stream. */
const SERVED_TYPES = new Set([
  ...INLINE_TYPES,
  'image/heic', 'image/heif', 'image/tiff',
  'application/pdf', 'application/zip', 'application/gzip', 'application/x-7z-compressed', 'application/x-tar',
  'application/vnd.oasis.opendocument.text', 'application/vnd.oasis.opendocument.spreadsheet',
  'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  'application/vnd.openxmlformats-officedocument.presentationml.presentation',
  'application/msword', 'application/vnd.ms-excel', 'application/octet-stream',
  'text/calendar', 'text/vcard', 'text/csv',
]);

const optionsSchema = z
  .object({
    subdomain: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label')
      .default('upload')
      .describe('The service JID is <subdomain>.<host> for every host'),
    maxFileSize: z.number().int().min(1).default(100 * MIB).describe('Largest file accepted, in bytes (announced as max-file-size)'),
    quotaBytes: z
      .number()
      .int()
      .min(0)
      .default(1024 * MIB)
      .describe('Most bytes one account may hold in live uploads (unexpired slots included); 0: no quota'),
    maxFiles: z
      .number()
      .int()
      .min(0)
      .default(1000)
      .describe('Most live uploads (unexpired slots included) one account may hold; 0: no limit'),
    directory: z.string().min(1).optional().describe('Where uploaded files are stored (default: dataDir/uploads)'),
    baseUrl: z
      .string()
      .url()
      .optional()
      .describe('Base URL of the upload links (default: http.publicUrl, else https://<host>:<http.tlsPort>)'),
    slotTtlSeconds: z.number().int().min(1).max(86_400).default(300).describe('How long the PUT URL of a slot stays valid, in seconds'),
    fileTtlSeconds: z
      .number()
      .int()
      .min(0)
      .default(30 * 86_400)
      .describe('Files are deleted this long after their upload, in seconds (0: kept)'),
    sweepIntervalSeconds: z.number().int().min(1).max(86_400).default(600).describe('How often expired files and slots are deleted, in seconds'),
    secretFile: z
      .string()
      .min(1)
      .optional()
      .describe('File holding the key that signs PUT URLs (default: generated into the upload directory)'),
  })
  .strict();

export type UploadOptions = z.infer<typeof optionsSchema>;

// ---- helpers (exported for unit tests) ------------------------------------------------------

/**
 * A file name safe to put in a URL segment and a Content-Disposition header: NFC, no control or
 * bidi-override characters, no path separators, no leading dots, at most MAX_NAME_CHARS code
 * points (cut before the extension). Returns null when nothing usable is left.
 */
export function sanitizeFilename(raw: string): string | null {
  let name = raw
    .normalize('NFC')
    // C0/C1 controls, DEL, bidi overrides and isolates (which disguise extensions), BOM.
    .replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufeff]/g, '')
    .replace(/[/\\]/g, '_')
    .trim()
    .replace(/^\.+/, '');
  const chars = [...name];
  if (chars.length > MAX_NAME_CHARS) {
    const dot = name.lastIndexOf('.');
    const ext = dot > 0 ? [...name.slice(dot)] : [];
    const keep = ext.length > 0 && ext.length <= 16 ? ext : [];
    name = chars.slice(0, MAX_NAME_CHARS - keep.length).join('') + keep.join('');
  }
  return name.length ? name : null;
}

/** `type/subtype` lower-cased without parameters, or null when it is not a media type. */
export function mediaType(raw: string | undefined): string | null {
  if (raw === undefined) return null;
  const t = (raw.split(';')[0] ?? '').trim().toLowerCase();
  if (t.length > MAX_TYPE_CHARS || !/^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/.test(t)) return null;
  return t;
}

/** What a download is served as: the announced type if it is on the safe list, and whether inline. */
export function servedType(contentType: string): { type: string; inline: boolean } {
  const type = SERVED_TYPES.has(contentType) ? contentType : 'application/octet-stream';
  return { type: type === 'text/plain' ? 'text/plain; charset=utf-8' : type, inline: INLINE_TYPES.has(type) };
}

/** RFC 6266 Content-Disposition with an ASCII fallback and the RFC 8187 UTF-8 form. */
export function contentDisposition(kind: 'inline' | 'attachment', name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

function signature(key: Buffer, r: Pick<UploadRecord, 'slot' | 'name' | 'size' | 'contentType'>, deadline: number): string {
  return createHmac('sha256', key).update(`v1\n${r.slot}\n${r.name}\n${r.size}\n${r.contentType}\n${deadline}`).digest('base64url');
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // timingSafeEqual needs equal lengths; the length of a valid signature is public anyway.
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The signing key: from `secretFile`, else created once (exclusively: concurrent nodes agree) in the directory. */
async function loadKey(dir: string, secretFile: string | undefined): Promise<Buffer> {
  if (secretFile !== undefined) {
    const text = (await readFile(secretFile, 'utf8')).trim();
    if (!text) throw new Error('modules.upload.secretFile: the file is empty');
    return Buffer.from(text, 'utf8');
  }
  const path = join(dir, '.upload.key');
  try {
    return Buffer.from((await readFile(path, 'utf8')).trim(), 'base64');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Written whole to a temporary name, then linked: a reader never sees a half-written key, and
  // link() fails if another process created the key first (then theirs is used).
  const tmp = join(dir, `.upload.key.${process.pid}.${randomBytes(4).toString('hex')}`);
  await writeFile(tmp, randomBytes(32).toString('base64'), { mode: 0o600 });
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  return Buffer.from((await readFile(path, 'utf8')).trim(), 'base64');
}

export default defineModule({
  name: 'upload',
  xeps: ['0363'],
  options: optionsSchema,
  async setup(ctx) {
    const opts = ctx.options;
    const http = ctx.config.http;
    const base = (opts.baseUrl ?? http.publicUrl)?.replace(/\/+$/, '');
    if (base === undefined && http.port === null && http.tlsPort === null) {
      ctx.log.warn('no HTTP listener and no baseUrl: the upload service is off');
      return;
    }
    const dir = resolve(opts.directory ?? join(ctx.config.dataDir, 'uploads'));
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const key = await loadKey(dir, opts.secretFile);
    const store = ctx.storage.uploads;
    function baseFor(host: string): string {
      if (base !== undefined) return base;
      // Port 0 (tests) is only known once listening: then the operator (or test) sets baseUrl.
      return http.tlsPort !== null ? `https://${host}:${http.tlsPort}` : `http://${host}:${http.port}`;
    }

    // ---- XMPP side ----------------------------------------------------------------------------

    function discoInfo(): Element {
      const q = new Element('query', { xmlns: NS.DISCO_INFO });
      q.c('identity', { category: 'store', type: 'file', name: 'HTTP File Upload' });
      for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS_UPLOAD, `${NS_PURPOSE}#message`, `${NS_PURPOSE}#ephemeral`]) q.c('feature', { var: f });
      const x = q.c('x', { xmlns: NS_XDATA, type: 'result' });
      x.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t(NS_UPLOAD);
      x.c('field', { var: 'max-file-size' }).c('value').t(String(opts.maxFileSize));
      // The per-account quota, so clients can tell users before they try (XEP-0068: "x-" fields
      // are this server's own additions to a registered form; 0 means no limit).
      x.c('field', { var: 'x-parley-quota-bytes' }).c('value').t(String(opts.quotaBytes));
      x.c('field', { var: 'x-parley-quota-files' }).c('value').t(String(opts.maxFiles));
      return q;
    }

    async function requestSlot(payload: Element, from: Jid, host: string): Promise<Element> {
      // §6: only this server's own accounts may store files here.
      if (!from.local || !ctx.isLocalHost(from.domain)) throw stanzaError('forbidden', 'Only local users may upload files');
      const { filename, size: sizeText } = payload.attrs;
      if (filename === undefined || sizeText === undefined || !/^\d{1,16}$/.test(sizeText)) {
        throw stanzaError('bad-request', 'filename and size (bytes) are required');
      }
      const size = Number(sizeText);
      if (size > opts.maxFileSize) {
        const app = new Element('file-too-large', { xmlns: NS_UPLOAD });
        app.c('max-file-size').t(String(opts.maxFileSize));
        throw new StanzaError('modify', 'not-acceptable', `File too large. The maximum file size is ${opts.maxFileSize} bytes`, app);
      }
      const name = sanitizeFilename(filename);
      if (!name) throw stanzaError('bad-request', 'unusable file name');
      let contentType = 'application/octet-stream';
      if (payload.attrs['content-type'] !== undefined) {
        const t = mediaType(payload.attrs['content-type']);
        if (!t) throw stanzaError('bad-request', 'invalid content-type');
        contentType = t;
      }
      const now = Date.now();
      let fileTtlMs = opts.fileTtlSeconds > 0 ? opts.fileTtlSeconds * 1000 : null;
      const ephemeral = payload.getChild('ephemeral', NS_PURPOSE);
      if (ephemeral) {
        const before = Date.parse(ephemeral.attrs['expire-before'] ?? '');
        if (!Number.isFinite(before)) throw stanzaError('bad-request', 'ephemeral needs expire-before');
        if (before <= now) throw stanzaError('bad-request', 'expire-before is in the past');
        // Counted from now: the file must be gone by then whenever the PUT happens.
        fileTtlMs = Math.min(fileTtlMs ?? Infinity, before - now);
      }
      const deadline = now + opts.slotTtlSeconds * 1000;
      const rec: UploadRecord = {
        slot: randomBytes(24).toString('base64url'),
        owner: from.bare,
        name,
        size,
        contentType,
        createdAt: now,
        expiresAt: deadline,
        uploadedAt: null,
      };
      if (!(await store.reserve(rec, opts.quotaBytes, opts.maxFiles))) {
        const used = await store.usage(from.bare, now);
        const text =
          opts.maxFiles > 0 && used.files >= opts.maxFiles
            ? `Quota reached: ${used.files} of ${opts.maxFiles} files in use`
            : `Quota reached: ${used.bytes} of ${opts.quotaBytes} bytes in use`;
        throw stanzaError('resource-constraint', text);
      }
      if (ephemeral && fileTtlMs !== null) ephemeralTtl.set(rec.slot, now + fileTtlMs);
      const url = `${baseFor(host)}/upload/${rec.slot}/${encodeURIComponent(name)}`;
      const slot = new Element('slot', { xmlns: NS_UPLOAD });
      slot.c('put', { url: `${url}?e=${deadline}&s=${signature(key, rec, deadline)}` });
      slot.c('get', { url });
      return slot;
    }

    /**
     * Absolute expiries of ephemeral slots, kept until their PUT (or their deadline). Held in
     * memory: a restart between slot and PUT falls back to fileTtlSeconds, which the PUT then caps.
     */
    const ephemeralTtl = new Map<string, number>();

    ctx.service(
      opts.subdomain,
      'HTTP File Upload',
      ({ stanza, to, from, host }) =>
        answerServiceIq({
          stanza,
          to,
          from,
          route: ctx.route,
          log: ctx.log,
          what: 'upload',
          discoInfo,
          handle: async (payload, type, f) => (type === 'get' && payload.name === 'request' && payload.attrs.xmlns === NS_UPLOAD ? requestSlot(payload, f, host) : undefined),
        }),
      { entitlement: 'filetransfer' },
    );

    // ---- HTTP side ----------------------------------------------------------------------------

    const fileOf = (slot: string) => join(dir, slot);
    /** Slots with a PUT in progress in this process (a second concurrent PUT gets 409 at once). */
    const uploading = new Set<string>();

    function cors(res: Response): void {
      res.setHeader('Access-Control-Allow-Origin', '*');
      res.setHeader('Access-Control-Allow-Methods', 'OPTIONS, HEAD, GET, PUT');
      res.setHeader('Access-Control-Allow-Headers', 'Content-Type');
      res.setHeader('Access-Control-Expose-Headers', 'Content-Length, Content-Disposition');
      res.setHeader('Access-Control-Max-Age', '86400');
    }

    function fail(res: Response, status: number, text: string): void {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.status(status).type('text/plain').setHeader('Cache-Control', 'no-store');
      res.send(`${text}\n`);
    }

    /** The slot named by the URL, if its id is well formed and the name segment matches. */
    async function lookup(req: Request): Promise<UploadRecord | null> {
      const { slot, name } = req.params as { slot?: string; name?: string };
      if (!slot || !name || !SLOT_RE.test(slot)) return null;
      const rec = await store.get(slot);
      return rec && rec.name === name ? rec : null;
    }

    const put: RequestHandler = async (req, res) => {
      cors(res);
      // A refusal leaves the body unread: close the connection rather than drain it (up to the
      // slot's size, or whatever the client claims). Lifted once the body was consumed.
      res.setHeader('Connection', 'close');
      const rec = await lookup(req);
      const q = req.query as Record<string, unknown>;
      const e = typeof q.e === 'string' && /^\d{1,15}$/.test(q.e) ? Number(q.e) : NaN;
      const s = typeof q.s === 'string' ? q.s : '';
      if (!rec || !Number.isFinite(e) || !safeEqual(s, signature(key, rec, e))) return fail(res, 403, 'invalid upload URL');
      const now = Date.now();
      if (rec.uploadedAt !== null || uploading.has(rec.slot)) return fail(res, 409, 'already uploaded');
      if (e <= now || rec.expiresAt === null || rec.expiresAt <= now) return fail(res, 403, 'upload URL expired');
      // §7: the exact size. Chunked bodies (no Content-Length) are refused rather than counted.
      const lengthHeader = req.headers['content-length'];
      if (lengthHeader === undefined) return fail(res, 411, 'Content-Length required');
      if (!/^\d{1,16}$/.test(lengthHeader)) return fail(res, 400, 'invalid Content-Length');
      const length = Number(lengthHeader);
      if (length > rec.size) return fail(res, 413, `the slot is for ${rec.size} bytes`);
      if (length !== rec.size) return fail(res, 400, `the slot is for ${rec.size} bytes`);
      const announced = req.headers['content-type'];
      if (announced !== undefined && rec.contentType !== 'application/octet-stream' && mediaType(announced) !== rec.contentType) {
        return fail(res, 415, `the slot is for ${rec.contentType}`);
      }

      uploading.add(rec.slot);
      const tmp = join(dir, `.tmp-${rec.slot}-${randomBytes(6).toString('hex')}`);
      const final = fileOf(rec.slot);
      let linked = false;
      try {
        let received = 0;
        const counter = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            received += chunk.length;
            // Content-Length was checked, but Node's parser is the one enforcing it; be sure.
            if (received > rec.size) cb(new Error('body larger than the slot'));
            else cb(null, chunk);
          },
        });
        await pipeline(req as IncomingMessage, counter, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
        if (received !== rec.size) throw new Error('body shorter than the slot');
        try {
          await link(tmp, final);
          linked = true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return fail(res, 409, 'already uploaded');
          throw err;
        }
        const at = Date.now();
        const ttl = opts.fileTtlSeconds > 0 ? at + opts.fileTtlSeconds * 1000 : null;
        const eph = ephemeralTtl.get(rec.slot);
        const expiresAt = eph !== undefined ? Math.min(eph, ttl ?? Infinity) : ttl;
        if (!(await store.complete(rec.slot, at, expiresAt))) {
          // The deadline passed during the upload, or another node completed it.
          await unlink(final).catch(() => undefined);
          linked = false;
          return fail(res, 409, 'slot no longer open');
        }
        ephemeralTtl.delete(rec.slot);
        res.removeHeader('Connection');
        res.status(201).setHeader('Cache-Control', 'no-store');
        res.end();
      } catch (err) {
        if (linked) await unlink(final).catch(() => undefined);
        ctx.log.debug({ err, slot: rec.slot }, 'upload failed');
        if (!req.destroyed && !res.headersSent) fail(res, 400, 'upload failed');
        else res.destroy();
      } finally {
        uploading.delete(rec.slot);
        await unlink(tmp).catch(() => undefined);
      }
    };

    const get: RequestHandler = async (req, res) => {
      cors(res);
      const rec = await lookup(req);
      const now = Date.now();
      if (!rec || rec.uploadedAt === null || (rec.expiresAt !== null && rec.expiresAt <= now)) return fail(res, 404, 'not found');
      const served = servedType(rec.contentType);
      res.setHeader('Content-Type', served.type);
      res.setHeader('Content-Disposition', contentDisposition(served.inline ? 'inline' : 'attachment', rec.name));
      res.setHeader('X-Content-Type-Options', 'nosniff');
      // §9: no active content from uploads, and no framing of them.
      res.setHeader('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'; sandbox");
      const maxAge = rec.expiresAt === null ? 31_536_000 : Math.max(0, Math.floor((rec.expiresAt - now) / 1000));
      // Immutable: a slot's bytes never change. Private: the link is the only credential.
      res.setHeader('Cache-Control', `private, max-age=${maxAge}, immutable`);
      // sendFile: HEAD, Range, ETag and conditional requests; it keeps the Content-Type set above.
      res.sendFile(fileOf(rec.slot), { dotfiles: 'allow', cacheControl: false, lastModified: true }, (err) => {
        if (!err) return;
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          res.removeHeader('Content-Disposition');
          fail(res, 404, 'not found');
        } else if (!res.headersSent) fail(res, 500, 'internal server error');
      });
    };

    const options: RequestHandler = (_req, res) => {
      cors(res);
      res.status(204).end();
    };

    const path = '/upload/:slot/:name';
    ctx.httpRoute('PUT', path, put);
    ctx.httpRoute('GET', path, get);
    ctx.httpRoute('HEAD', path, get);
    ctx.httpRoute('OPTIONS', path, options);

    // ---- expiry -------------------------------------------------------------------------------

    let sweeping = false;
    async function sweep(): Promise<void> {
      if (sweeping) return;
      sweeping = true;
      try {
        const now = Date.now();
        for (;;) {
          const batch = await store.expired(now, SWEEP_BATCH);
          for (const r of batch) {
            // File first: a row without a file is harmless (404), a file without a row is a leak.
            await unlink(fileOf(r.slot)).catch((err: NodeJS.ErrnoException) => {
              if (err.code !== 'ENOENT') throw err;
            });
            await store.remove(r.slot);
            ephemeralTtl.delete(r.slot);
          }
          if (batch.length < SWEEP_BATCH) break;
        }
        for (const f of await readdir(dir)) {
          if (!f.startsWith('.tmp-')) continue;
          const st = await stat(join(dir, f)).catch(() => null);
          if (st && now - st.mtimeMs > STALE_TEMP_MS) await unlink(join(dir, f)).catch(() => undefined);
        }
      } catch (err) {
        ctx.log.error({ err }, 'upload expiry failed');
      } finally {
        sweeping = false;
      }
    }
    const timer = setInterval(() => void sweep(), opts.sweepIntervalSeconds * 1000);
    timer.unref();
    ctx.onUnload(() => clearInterval(timer));
    ctx.log.debug({ dir }, 'upload service ready');
  },
});
