// XEP-0215 External Service Discovery (urn:xmpp:extdisco:2, v1.0): §3.1 requesting all services,
// §3.2 services of one type (no §3.3 pushes: the list only changes with the configuration, which
// needs a restart), §3.4 requesting credentials, §6 disco feature on the server.
//
// Services come from the configuration. A restricted service (TURN by default) needs credentials;
// with a shared secret the server issues time-limited ones by the TURN REST scheme that coturn's
// `use-auth-secret` checks (draft-uberti-behave-turn-rest §2.2):
//   username = "<expiry unix seconds>:<user bare JID>", password = base64(HMAC-SHA1(secret, username)).
// They are included in the service list (as Conversations, Dino and Monal expect: none of them
// sends §3.4 requests) and in §3.4 answers. Without a secret a restricted service is listed with
// restricted='1' and no credentials, and §3.4 answers item-not-found for it.
// Only the server's own accounts may ask (forbidden otherwise: §3 lets the responder refuse).
// The secret is held in memory only; it is never logged or echoed.
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule, type IqRequest } from '../core/module.js';
import { stanzaError } from '../xmpp/errors.js';

export const NS_EXTDISCO = 'urn:xmpp:extdisco:2';

const serviceSchema = z
  .object({
    /** Registered service type (XEP-0215 §8.2): stun, turn, turns, ftp ... */
    type: z.string().regex(/^[a-z0-9][a-z0-9+.-]*$/, 'a lower-case service type such as stun or turn'),
    /** FQDN or IP address clients connect to. */
    host: z.string().min(1).max(255),
    /** Port at the host (recommended by the XEP). */
    port: z.number().int().min(1).max(65535).optional(),
    /** Underlying transport. */
    transport: z.enum(['udp', 'tcp']).optional(),
    /** Credentials are required to use it; default true for turn/turns. */
    restricted: z.boolean().optional(),
    /** Human-readable label. */
    name: z.string().min(1).max(200).optional(),
  })
  .strict();

const optionsSchema = z
  .object({
    services: z.array(serviceSchema).max(64).default([]).describe('External services announced to local users: {type, host, port?, transport?, restricted?, name?}'),
    secret: z.string().min(1).optional().describe('Shared secret of the TURN server (coturn static-auth-secret); prefer secretFile'),
    secretFile: z.string().min(1).optional().describe('File holding the shared secret (surrounding whitespace ignored)'),
    credentialTtlSeconds: z.number().int().min(60).max(7 * 86400).default(86400).describe('Lifetime of issued TURN credentials, in seconds'),
  })
  .strict()
  .refine((o) => !(o.secret !== undefined && o.secretFile !== undefined), { message: 'set either secret or secretFile, not both' });

type Service = z.infer<typeof serviceSchema>;

function isRestricted(s: Service): boolean {
  return s.restricted ?? (s.type === 'turn' || s.type === 'turns');
}

/** TURN REST credentials (draft-uberti-behave-turn-rest §2.2) valid until `expiry` (unix seconds). */
export function turnCredentials(secret: Buffer, user: string, expiry: number): { username: string; password: string } {
  const username = `${expiry}:${user}`;
  const password = createHmac('sha1', secret).update(username).digest('base64');
  return { username, password };
}

export default defineModule({
  name: 'extdisco',
  xeps: ['0215'],
  options: optionsSchema,
  async setup(ctx) {
    const opts = ctx.options;
    let secret: Buffer | null = null;
    if (opts.secret !== undefined) secret = Buffer.from(opts.secret, 'utf8');
    if (opts.secretFile !== undefined) {
      // Read once at start: a rotated secret takes effect on restart, like the TURN server's own.
      const text = (await readFile(opts.secretFile, 'utf8')).trim();
      if (!text) throw new Error('modules.extdisco.secretFile: the file is empty');
      secret = Buffer.from(text, 'utf8');
    }
    const services = opts.services;

    ctx.addFeature(NS_EXTDISCO, 'server');

    /** Only the server's own accounts learn about (and get credentials for) its relays. */
    function requester(req: IqRequest): string {
      if (!req.from.local || !ctx.isLocalHost(req.from.domain)) throw stanzaError('forbidden');
      return req.from.bare;
    }

    function describe(s: Service, user: string, withCredentials: boolean): Element {
      const attrs: Record<string, string> = { type: s.type, host: s.host };
      if (s.port !== undefined) attrs.port = String(s.port);
      if (s.transport) attrs.transport = s.transport;
      if (s.name) attrs.name = s.name;
      const restricted = isRestricted(s);
      if (restricted) attrs.restricted = '1';
      if (restricted && withCredentials && secret) {
        const expiry = Math.floor(Date.now() / 1000) + opts.credentialTtlSeconds;
        Object.assign(attrs, turnCredentials(secret, user, expiry));
        attrs.expires = new Date(expiry * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
      }
      return new Element('service', attrs);
    }

    // §3.1 / §3.2
    ctx.iq('get', NS_EXTDISCO, 'services', (req) => {
      const user = requester(req);
      const type = req.payload.attrs.type;
      const out = new Element('services', type ? { xmlns: NS_EXTDISCO, type } : { xmlns: NS_EXTDISCO });
      for (const s of services) if (!type || s.type === type) out.cnode(describe(s, user, true));
      return out;
    });

    // §3.4
    ctx.iq('get', NS_EXTDISCO, 'credentials', (req) => {
      const user = requester(req);
      const wanted = req.payload.getChildElements().filter((c) => c.name === 'service');
      const want = wanted[0];
      if (wanted.length !== 1 || !want) throw stanzaError('bad-request', 'exactly one service is needed');
      const { host, type, port } = want.attrs;
      if (!host || !type) throw stanzaError('bad-request', 'the service needs host and type');
      if (port !== undefined && !/^\d{1,5}$/.test(port)) throw stanzaError('bad-request', 'invalid port');
      const matches = services.filter((s) => s.host === host && s.type === type && (port === undefined || s.port === Number(port)));
      if (!matches.length) throw stanzaError('item-not-found', 'no such service');
      if (!secret && matches.some(isRestricted)) throw stanzaError('item-not-found', 'no credentials are available for this service');
      const out = new Element('credentials', { xmlns: NS_EXTDISCO });
      for (const s of matches) out.cnode(describe(s, user, true));
      return out;
    });
  },
});
