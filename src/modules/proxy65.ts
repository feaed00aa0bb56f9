// XEP-0065 SOCKS5 Bytestreams (v1.8.2), the proxy (StreamHost) side: §4 discovering the proxy
// (disco#items of the host lists it; its disco#info has identity proxy/bytestreams and the
// bytestreams feature; the <streamhost/> network address query, forbidden for non-local users),
// §6 mediated connection (§6.3.2/§6.3.4 SOCKS5 CONNECT with DST.ADDR = SHA1(SID + Requester JID +
// Target JID) and DST.PORT 0, answered with BND.ADDR/BND.PORT = DST.ADDR/DST.PORT; §6.3.5
// activation with its error conditions), §9.1 StreamHost requirements (one target per stream;
// bytes sent before activation are ignored) and §10 security (only local authenticated users may
// activate; limits against streams that are never activated). UDP (§8) is not offered.
//
// SOCKS5 is the RFC 1928 subset XEP-0065 uses: method X'00' (no authentication) only, CMD CONNECT,
// ATYP DOMAINNAME carrying the 40-hex-digit hash. Anything else is refused with the RFC 1928 reply
// code for it and closed; a connection that is not even SOCKS5 is closed without a reply.
//
// Hosting: the service is `<subdomain>.<host>` for every local host, registered with
// `ctx.service` (the router hands it the stanzas for those domains, after the `filetransfer`
// entitlement check, before any remote path). Nothing in the composition root knows about it.
//
// Before login (issue 16 §4): the listener takes connections from anyone, so a connection may
// wait only for a stream a local user announced. The module watches its users' offers as they
// pass through the server (c2s.stanza): a XEP-0065 §6.1 streamhost offer, or a XEP-0260 proxy
// candidate, naming this proxy; the hash SHA1(SID + offerer + recipient) is then expected, for a
// bounded time and at most `maxStreamsPerUser` per offerer. A CONNECT for any other hash is
// refused at once. Waiting connections are counted per IPv4 address and per IPv6 /64 (one
// subscriber holds billions of /128s), and a stream whose second party does not come within
// `pairTimeoutSeconds` is closed.
//
// Listener: the module opens its SOCKS5 listener in setup() and closes it (with every relayed
// connection) on unload. It is not an XMPP transport (no session, no mux, no web container), so it
// stays out of src/transports and app.ts; clients learn its bound port from the <streamhost/>
// answer, which is also how tests find it when they bind port 0.
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { Element } from 'ltx';
import { z } from 'zod';
import { networkKey } from '../core/addresses.js';
import { TokenBucket } from '../core/bucket.js';
import { defineModule } from '../core/module.js';
import { StanzaError, stanzaError } from '../xmpp/errors.js';
import { Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { iqPayload, iqResult } from '../xmpp/stanza.js';

export const NS_BYTESTREAMS = 'http://jabber.org/protocol/bytestreams';
const DEFAULT_PORT = 7777;
/** Longest greeting (2 + 255 methods) or request (5 + 255 + 2): more unparsed bytes is an attack. */
const MAX_HANDSHAKE_BYTES = 600;
/** Bytes a connection may send before activation (they are dropped) before it is closed. */
const MAX_EARLY_BYTES = 65536;

/** RFC 1928 §6 reply codes used here. */
const REP = { succeeded: 0x00, generalFailure: 0x01, notAllowed: 0x02, refused: 0x05, commandNotSupported: 0x07, addressTypeNotSupported: 0x08 } as const;

const optionsSchema = z
  .object({
    subdomain: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label').default('proxy').describe('The service JID is <subdomain>.<host> for every local host'),
    name: z.string().min(1).max(100).default('SOCKS5 Bytestreams Service').describe('Name of the service in disco#info and disco#items'),
    address: z.string().optional().describe('Address the SOCKS5 listener binds to (default: listen.address)'),
    port: z
      .number()
      .int()
      .min(0)
      .max(65535)
      .optional()
      .describe('Port of the SOCKS5 listener (default 7777, which only disables the proxy with a warning when busy; an explicit port that cannot be bound stops the start; 0: any free port)'),
    publicHost: z.string().min(1).max(255).optional().describe('Host clients connect to, announced in <streamhost/> (default: the bind address, or the XMPP domain when binding a wildcard address)'),
    publicPort: z.number().int().min(1).max(65535).optional().describe('Port announced in <streamhost/> (default: the bound port; set it behind port forwarding)'),
    maxPendingPerAddress: z.number().int().min(1).default(10).describe('Connections from one IPv4 address or IPv6 /64 that are not yet activated (handshaking or waiting)'),
    requireOffer: z
      .boolean()
      .default(true)
      .describe('Accept a connection only for a stream a local user offered through this server (XEP-0065 streamhost offer or XEP-0260 proxy candidate naming this proxy)'),
    maxStreamsPerUser: z.number().int().min(1).default(10).describe('Offered, not yet finished bytestreams per user; more offers naming this proxy are refused with resource-constraint'),
    pairTimeoutSeconds: z.number().int().min(1).max(300).default(15).describe('Time the first connection of a stream waits for the second before both are closed'),
    maxConnections: z.number().int().min(2).default(1000).describe('Open SOCKS5 connections in total'),
    maxStreams: z.number().int().min(1).default(200).describe('Bytestreams (pending or active pairs) in total'),
    maxBytesPerStream: z.number().int().min(0).default(4 * 1024 ** 3).describe('Bytes relayed per bytestream, both directions, before it is closed (0: no limit)'),
    bytesPerSecond: z.number().int().min(0).default(10 * 1024 * 1024).describe('Relay rate per bytestream in bytes/s; the sender is paused, not cut (0: no limit)'),
    handshakeTimeoutSeconds: z.number().int().min(1).max(300).default(10).describe('Time a connection has to complete the SOCKS5 greeting and CONNECT'),
    activationTimeoutSeconds: z.number().int().min(1).max(3600).default(60).describe('Time a bytestream may wait for its second connection and activation'),
    idleTimeoutSeconds: z.number().int().min(1).max(86400).default(300).describe('An active bytestream with no traffic for this long is closed'),
  })
  .strict();

export type Proxy65Options = z.infer<typeof optionsSchema>;

/** SHA1(SID + Requester JID + Target JID), hex (XEP-0065 §6.3.2). */
export function streamHash(sid: string, requester: string, target: string): string {
  return createHash('sha1').update(sid + requester + target, 'utf8').digest('hex');
}

/** One bytestream: the first connection with a hash, then the second; relayed once activated. */
interface Stream {
  hash: string;
  sockets: net.Socket[];
  active: boolean;
  timer: NodeJS.Timeout | null;
  bytes: number;
  bucket: TokenBucket | null;
  closed: boolean;
}

export default defineModule({
  name: 'proxy65',
  xeps: ['0065'],
  options: optionsSchema,
  async setup(ctx) {
    const opts = ctx.options;
    const log = ctx.log;
    const bindAddress = opts.address ?? ctx.config.listen.address;
    const streams = new Map<string, Stream>();
    const sockets = new Set<net.Socket>();
    /** Not-yet-activated connections per remote address (IPv4) or /64 (IPv6). */
    const pendingByAddress = new Map<string, number>();
    const pendingCounted = new WeakSet<net.Socket>();
    /** Stream hashes local users offered (see the banner), with their offerer and deadline. */
    const offered = new Map<string, { owner: string; until: number }>();
    const offersByOwner = new Map<string, number>();
    const offerTtlMs = (opts.pairTimeoutSeconds + opts.activationTimeoutSeconds) * 1000;

    // Half-open: a sender's FIN is passed on while the other direction stays usable.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => accept(sock));
    const bound = await listen(server, bindAddress, opts.port ?? DEFAULT_PORT).catch((err: NodeJS.ErrnoException) => {
      // The default port may be taken by another instance on the same machine: the server still
      // starts, without a proxy. A port the operator chose must work or the start fails.
      if (opts.port === undefined && err.code === 'EADDRINUSE') {
        log.warn({ port: DEFAULT_PORT }, 'SOCKS5 proxy disabled: default port busy (set modules.proxy65.port)');
        return null;
      }
      throw err;
    });
    if (!bound) return;
    server.on('error', (err) => log.error({ err }, 'SOCKS5 listener error'));
    const wildcard = bindAddress === '::' || bindAddress === '0.0.0.0' || bindAddress === '';
    const publicPort = opts.publicPort ?? bound.port;
    log.info({ address: bound.address, port: bound.port }, 'SOCKS5 bytestreams proxy listening');

    ctx.onUnload(async () => {
      for (const s of sockets) s.destroy();
      for (const st of streams.values()) if (st.timer) clearTimeout(st.timer);
      streams.clear();
      await new Promise<void>((r) => server.close(() => r()));
    });

    // ---- offers (see the banner) -------------------------------------------------------------

    // The hosts are fixed for the server's life: this proxy's JIDs are computed once, not per iq.
    const mine = new Set(ctx.hostNames().map((h) => `${opts.subdomain}.${h}`));

    function dropOffer(hash: string): void {
      const o = offered.get(hash);
      if (!o) return;
      offered.delete(hash);
      const n = (offersByOwner.get(o.owner) ?? 1) - 1;
      if (n <= 0) offersByOwner.delete(o.owner);
      else offersByOwner.set(o.owner, n);
    }

    function expireOffers(now: number): void {
      for (const [hash, o] of offered) if (o.until <= now && !streams.get(hash)?.active) dropOffer(hash);
    }
    ctx.every(Math.max(1000, offerTtlMs / 2), 'SOCKS5 offer expiry', async () => expireOffers(Date.now()));

    /** The sids of this proxy's streams that an iq offers: XEP-0065 §6.1 or XEP-0260 §2.2 proxy candidates. */
    function offeredSids(iq: Element): string[] {
      const q = iq.getChild('query', NS_BYTESTREAMS);
      if (q) {
        const sid = q.attrs.sid;
        return sid && q.getChildren('streamhost').some((h) => mine.has(String(h.attrs.jid))) ? [sid] : [];
      }
      const jingle = iq.getChild('jingle', NS_JINGLE);
      if (!jingle) return [];
      const sids: string[] = [];
      for (const content of jingle.getChildren('content')) {
        for (const t of content.getChildren('transport', NS_JINGLE_S5B)) {
          if (t.attrs.sid && t.getChildren('candidate').some((c) => mine.has(String(c.attrs.jid)))) sids.push(t.attrs.sid);
        }
      }
      return sids;
    }

    ctx.hook(
      'c2s.stanza',
      ({ stanza }) => {
        if (stanza.name !== 'iq' || stanza.attrs.type !== 'set' || !stanza.attrs.to || !stanza.attrs.from) return undefined;
        const sids = offeredSids(stanza);
        if (!sids.length) return undefined;
        const from = Jid.tryParse(stanza.attrs.from);
        if (!from) return undefined;
        const now = Date.now();
        const hashes = sids.filter((sid) => sid.length <= 256).map((sid) => streamHash(sid, stanza.attrs.from as string, stanza.attrs.to as string));
        const fresh = hashes.filter((h) => !offered.has(h));
        if ((offersByOwner.get(from.bare) ?? 0) + fresh.length > opts.maxStreamsPerUser) {
          expireOffers(now);
          if ((offersByOwner.get(from.bare) ?? 0) + fresh.length > opts.maxStreamsPerUser) {
            throw new StanzaError('wait', 'resource-constraint', `at most ${opts.maxStreamsPerUser} file transfers through the proxy at once`);
          }
        }
        for (const h of hashes) {
          const known = offered.get(h);
          if (known) known.until = now + offerTtlMs;
          else {
            offered.set(h, { owner: from.bare, until: now + offerTtlMs });
            offersByOwner.set(from.bare, (offersByOwner.get(from.bare) ?? 0) + 1);
          }
        }
        return undefined;
      },
      200,
    );

    // ---- XMPP side -----------------------------------------------------------------------------

    ctx.service(opts.subdomain, opts.name, async ({ stanza, to, from, host }) => {
      if (stanza.name !== 'iq') {
        // A service without messages: RFC 6120 §10.4.3 (service-unavailable for a message, presence ignored).
        if (stanza.name === 'message' && stanza.attrs.type !== 'error') throw stanzaError('service-unavailable');
        return;
      }
      const type = stanza.attrs.type;
      if (type !== 'get' && type !== 'set') return; // results/errors: we never send requests
      if (!from) return;
      if (to.local || to.resource) throw stanzaError('service-unavailable');
      const payload = iqPayload(stanza);
      if (!payload || payload === 'many') throw stanzaError('bad-request');
      const result = await handleIq(type, payload, from, host);
      await ctx.route(iqResult(stanza, result));
    }, { entitlement: 'filetransfer' });

    async function handleIq(type: 'get' | 'set', payload: Element, from: Jid, host: string): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (payload.name !== 'query') throw stanzaError('service-unavailable');
      if (type === 'get' && ns === NS.DISCO_INFO) {
        if (payload.attrs.node) throw stanzaError('item-not-found');
        const q = new Element('query', { xmlns: NS.DISCO_INFO });
        q.c('identity', { category: 'proxy', type: 'bytestreams', name: opts.name });
        q.c('feature', { var: NS.DISCO_INFO });
        q.c('feature', { var: NS_BYTESTREAMS });
        return q;
      }
      if (type === 'get' && ns === NS.DISCO_ITEMS) {
        if (payload.attrs.node) throw stanzaError('item-not-found');
        return new Element('query', { xmlns: NS.DISCO_ITEMS });
      }
      if (ns !== NS_BYTESTREAMS) throw stanzaError('service-unavailable');
      requireLocalUser(from);
      if (type === 'get') {
        // §4: the address clients use; with a wildcard bind address the XMPP domain is the best guess.
        const q = new Element('query', { xmlns: NS_BYTESTREAMS });
        const hostAttr = opts.publicHost ?? (wildcard ? host : bindAddress);
        q.c('streamhost', { jid: `${opts.subdomain}.${host}`, host: hostAttr, port: String(publicPort) });
        return q;
      }
      activate(payload, from);
      return undefined;
    }

    /**
     * §10: the proxy serves the server's own users only. A stanza from a local full JID with a
     * bound session can only come from that session (the c2s layer stamps `from`).
     */
    function requireLocalUser(from: Jid): void {
      if (!from.local || !from.resource || !ctx.isLocalHost(from.domain) || !ctx.sessions.get(from)) {
        throw new StanzaError('auth', 'forbidden', 'the proxy is for local users only');
      }
    }

    /** §6.3.5 activation and its error conditions. */
    function activate(query: Element, from: Jid): void {
      const sid = query.attrs.sid;
      const act = query.getChild('activate');
      const text = act?.getText().trim();
      if (!sid || sid.length > 256 || !text) throw stanzaError('bad-request');
      const target = Jid.tryParse(text);
      if (!target) throw stanzaError('jid-malformed');
      // The requester is the sender of this iq (its full JID, as the router stamped it), so
      // nobody else can compute the hash of someone else's stream.
      const st = streams.get(streamHash(sid, from.full, target.full));
      if (!st || st.closed) throw stanzaError('item-not-found');
      if (st.active) throw new StanzaError('cancel', 'not-allowed', 'already activated');
      if (st.sockets.length < 2) throw new StanzaError('cancel', 'not-allowed', 'only one party is connected');
      startRelay(st);
      log.debug({ sid, requester: from.full, target: target.full }, 'bytestream activated');
    }

    // ---- SOCKS5 side ---------------------------------------------------------------------------

    /** What a connection counts against: its IPv4 address, or its IPv6 /64. */
    function addrOf(sock: net.Socket): string {
      return networkKey(sock.remoteAddress ?? 'unknown');
    }

    function uncountPending(sock: net.Socket): void {
      if (!pendingCounted.has(sock)) return;
      pendingCounted.delete(sock);
      const a = addrOf(sock);
      const n = (pendingByAddress.get(a) ?? 1) - 1;
      if (n <= 0) pendingByAddress.delete(a);
      else pendingByAddress.set(a, n);
    }

    function accept(sock: net.Socket): void {
      sock.on('error', (err) => log.debug({ err: err.message }, 'SOCKS5 connection error'));
      const a = addrOf(sock);
      const pending = pendingByAddress.get(a) ?? 0;
      if (sockets.size >= opts.maxConnections || pending >= opts.maxPendingPerAddress) {
        log.warn({ addr: a }, 'SOCKS5 connection refused: limit');
        sock.destroy();
        return;
      }
      sockets.add(sock);
      pendingByAddress.set(a, pending + 1);
      pendingCounted.add(sock);
      sock.on('close', () => {
        sockets.delete(sock);
        uncountPending(sock);
      });
      sock.setTimeout(opts.handshakeTimeoutSeconds * 1000);
      sock.once('timeout', () => sock.destroy());
      handshake(sock);
    }

    /** Refuses a CONNECT with an RFC 1928 reply (bound address 0.0.0.0:0) and closes. */
    function refuse(sock: net.Socket, rep: number): void {
      sock.end(Buffer.from([0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0]));
      sock.destroySoon();
    }

    function handshake(sock: net.Socket): void {
      let buf = Buffer.alloc(0);
      let greeted = false;
      const onData = (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length > MAX_HANDSHAKE_BYTES) {
          sock.destroy();
          return;
        }
        if (!greeted) {
          if (buf.length < 2) return;
          if (buf[0] !== 0x05) {
            sock.destroy(); // not SOCKS5: no reply at all
            return;
          }
          const n = buf[1] as number;
          if (buf.length < 2 + n) return;
          if (n === 0 || !buf.subarray(2, 2 + n).includes(0x00)) {
            // RFC 1928 §3: X'FF' no acceptable methods, then close.
            sock.off('data', onData);
            sock.end(Buffer.from([0x05, 0xff]));
            sock.destroySoon();
            return;
          }
          sock.write(Buffer.from([0x05, 0x00]));
          buf = buf.subarray(2 + n);
          greeted = true;
        }
        if (buf.length < 5) return;
        if (buf[0] !== 0x05 || buf[2] !== 0x00) {
          sock.destroy();
          return;
        }
        const len = buf[4] as number;
        const complete = buf.length >= 5 + len + 2;
        if (buf[1] !== 0x01 || buf[3] !== 0x03 || complete) sock.off('data', onData);
        if (buf[1] !== 0x01) return refuse(sock, REP.commandNotSupported);
        if (buf[3] !== 0x03) return refuse(sock, REP.addressTypeNotSupported);
        if (!complete) return;
        const dst = buf.subarray(5, 5 + len).toString('latin1');
        const port = buf.readUInt16BE(5 + len);
        // §6.3.2: DST.ADDR is a hex SHA-1 and DST.PORT is 0; this proxy relays nothing else.
        if (len !== 40 || !/^[0-9a-fA-F]{40}$/.test(dst) || port !== 0) return refuse(sock, REP.notAllowed);
        // Bytes after the request are data sent before activation, which §9.1 says to ignore.
        connectStream(sock, dst.toLowerCase());
      };
      sock.on('data', onData);
      sock.on('end', () => sock.destroy()); // gave up mid-handshake
    }

    function connectStream(sock: net.Socket, hash: string): void {
      const offer = offered.get(hash);
      if (opts.requireOffer && (!offer || offer.until <= Date.now())) {
        log.debug({ addr: sock.remoteAddress }, 'SOCKS5 connection for a stream nobody offered');
        return refuse(sock, REP.notAllowed);
      }
      let st = streams.get(hash);
      if (st && (st.sockets.length >= 2 || st.active || st.closed)) return refuse(sock, REP.notAllowed); // §9.1: one target per stream
      if (!st) {
        if (streams.size >= opts.maxStreams) return refuse(sock, REP.refused);
        const created: Stream = { hash, sockets: [], active: false, timer: null, bytes: 0, bucket: null, closed: false };
        // The second party has pairTimeoutSeconds to come; then activation has its own time.
        created.timer = setTimeout(() => {
          log.debug({ hash }, 'bytestream: second party did not connect in time');
          teardown(created);
        }, opts.pairTimeoutSeconds * 1000);
        created.timer.unref();
        streams.set(hash, created);
        st = created;
      }
      const stream = st;
      stream.sockets.push(sock);
      if (stream.sockets.length === 2) {
        if (stream.timer) clearTimeout(stream.timer);
        stream.timer = setTimeout(() => {
          log.debug({ hash }, 'bytestream not activated in time');
          teardown(stream);
        }, opts.activationTimeoutSeconds * 1000);
        stream.timer.unref();
      }
      sock.removeAllListeners('end');
      sock.removeAllListeners('timeout');
      sock.setTimeout(0);
      // §9.1: bytes sent before activation are ignored. They are still read (not left paused in
      // TCP buffers) so that a client going away is noticed at once and stops counting against
      // its address; one that keeps sending is misbehaving and is cut.
      let early = 0;
      sock.on('data', (chunk: Buffer) => {
        early += chunk.length;
        if (early > MAX_EARLY_BYTES) teardown(stream);
      });
      sock.on('end', () => {
        if (!stream.active) teardown(stream);
      });
      sock.on('close', () => {
        if (!stream.active) return teardown(stream);
        const other = stream.sockets.find((s) => s !== sock);
        // Let what is already queued to the peer reach it, then close.
        if (other && !other.destroyed) other.destroySoon();
        if (stream.sockets.every((s) => s.destroyed)) forget(stream);
      });
      const reply = Buffer.alloc(7 + 40);
      reply.set([0x05, REP.succeeded, 0x00, 0x03, 40]);
      reply.write(hash, 5, 'latin1');
      reply.writeUInt16BE(0, 45);
      sock.write(reply);
    }

    function forget(st: Stream): void {
      st.closed = true;
      dropOffer(st.hash);
      if (st.timer) clearTimeout(st.timer);
      st.timer = null;
      if (streams.get(st.hash) === st) streams.delete(st.hash);
    }

    function teardown(st: Stream): void {
      forget(st);
      for (const s of st.sockets) s.destroy();
    }

    function startRelay(st: Stream): void {
      const [a, b] = st.sockets as [net.Socket, net.Socket];
      st.active = true;
      if (st.timer) clearTimeout(st.timer);
      st.timer = null;
      if (opts.bytesPerSecond > 0) st.bucket = new TokenBucket(opts.bytesPerSecond, opts.bytesPerSecond);
      for (const [src, dst] of [[a, b], [b, a]] as const) {
        uncountPending(src);
        src.setTimeout(opts.idleTimeoutSeconds * 1000);
        src.on('timeout', () => {
          log.debug({ hash: st.hash }, 'bytestream idle');
          teardown(st);
        });
        src.removeAllListeners('data'); // the pre-activation discarder
        pipe(st, src, dst);
      }
    }

    /** Relays src -> dst with backpressure, the per-stream byte cap and rate. */
    function pipe(st: Stream, src: net.Socket, dst: net.Socket): void {
      src.on('data', (chunk: Buffer) => {
        st.bytes += chunk.length;
        if (opts.maxBytesPerStream > 0 && st.bytes > opts.maxBytesPerStream) {
          log.info({ hash: st.hash }, 'bytestream closed: byte limit');
          teardown(st);
          return;
        }
        let holds = 0;
        const release = () => {
          if (--holds === 0 && !src.destroyed) src.resume();
        };
        if (!dst.write(chunk)) {
          holds++;
          dst.once('drain', release);
        }
        const wait = st.bucket ? st.bucket.take(chunk.length) : 0;
        if (wait > 0) {
          holds++;
          setTimeout(release, wait).unref();
        }
        if (holds > 0) src.pause();
      });
      // Half-close (the sender finished): pass the FIN on, keep the other direction open.
      src.on('end', () => {
        if (!dst.destroyed) dst.end();
      });
    }
  },
});

function listen(server: net.Server, address: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address, port }, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

const NS_JINGLE = 'urn:xmpp:jingle:1';
const NS_JINGLE_S5B = 'urn:xmpp:jingle:transports:s5b:1';
