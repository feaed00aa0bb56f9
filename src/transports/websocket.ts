// XMPP over WebSocket (RFC 7395) at /xmpp-websocket, and connection discovery (XEP-0156) at
// /.well-known/host-meta[.json]. Each WebSocket connection is a Transport driving the same
// C2SSession as TCP: SASL, binding, XEP-0198 (resumption across TCP, BOSH and WebSocket) and every
// module work unchanged.
//
// Implemented:
//   RFC 7395 §3.1 handshake: the `xmpp` subprotocol is required (HTTP 400 otherwise); Origin
//     allow-list (`http.websocket.origins`, HTTP 403); plain ws:// refused when TLS is required and
//     the request is not secure (see web.ts for what counts as secure).
//   §3.2 text messages only; one complete, well-formed element per message, checked with the
//     hardened parser (parseElement); anything else is a stream error.
//   §3.3 framing: the client's <open/> becomes a stream header for the session's stream parser,
//     <close/> becomes </stream:stream>; every other message is fed to the parser as it came. The
//     session's output is split into top-level elements, one per message: the header becomes
//     <open/>, </stream:stream> becomes <close/>, <stream:features>/<stream:error> get the stream
//     namespace declared, and other elements without a namespace are qualified with jabber:client.
//   §3.3.2/§3.3.3 stream restarts after SASL (a new <open/>) go through the session's parser reset.
//   §3.4 liveness with WebSocket pings (no whitespace keepalives): a connection that did not answer
//     the previous ping (and sent nothing) is dropped.
//   §3.6 closing with <close/> then a WebSocket close (1000); §3.6.1 see-other-uri redirects
//     (`http.websocket.seeOtherUri`), never from a secure connection to ws://.
//   §4 security: `maxPayload` is tied to `limits.maxStanzaBytes` (ws refuses larger messages,
//     fragmented or not, with 1009 before buffering them); no permessage-deflate (compression bombs).
//   XEP-0156 §3 (HTTP lookup): XRD and JRD host-meta with the websocket and xbosh links, CORS `*`.
// Not implemented: channel binding (the TLS session is the web server's, not the stream's).
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import express, { type Request, type Response } from 'express';
import type { Element } from 'ltx';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import type { ChannelBindingType } from '../core/transport.js';
import type { Server } from '../core/server.js';
import { C2SSession } from '../core/session.js';
import type { Transport, TransportEvents } from '../core/transport.js';
import { StreamError } from '../xmpp/errors.js';
import { NS } from '../xmpp/ns.js';
import { parseElement } from '../xmpp/parser.js';
import type { RequestInfo, WebContainer } from './web.js';

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
export const WEBSOCKET_PATH = '/xmpp-websocket';
export const SUBPROTOCOL = 'xmpp';
const NS_XRD = 'http://docs.oasis-open.org/ns/xri/xrd-1.0';
const REL_WEBSOCKET = 'urn:xmpp:alt-connections:websocket';
const REL_BOSH = 'urn:xmpp:alt-connections:xbosh';

/**
 * Bytes a WebSocket message may carry beyond the stanza limit: RFC 7395 makes clients declare
 * namespaces on every element, which TCP streams inherit from the header. Messages between the
 * limit and this are refused by the parser with a stream error; larger ones by ws, with 1009.
 */
const FRAMING_SLACK = 1024;
const WHITESPACE = /^[ \t\r\n]*$/;
/** How long a closing connection may take to finish the WebSocket closing handshake. */
const CLOSE_GRACE_MS = 5000;

export class WebSocketTransport implements Transport {
  readonly kind = 'websocket' as const;
  readonly canStartTls = false;
  private events: TransportEvents | null = null;
  private closed = false;
  /** The stream is over for the input side (error reported, <close/> or redirect). */
  private inputDone = false;
  /** A session write cut inside an element (never expected; kept so that framing cannot desync). */
  private outPending = '';
  /** For the liveness sweep: anything heard since the last ping. */
  alive = true;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
    readonly remoteAddress: string,
    readonly localPort: number,
    readonly secure: boolean,
    private readonly limits: { maxStanzaBytes: number; maxDepth: number; maxAttributes: number },
    private readonly seeOtherUri: string | null,
  ) {
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => {
      this.alive = true;
    });
    ws.on('error', () => {
      /* ws closes the connection itself (1009 too big, 1007 bad UTF-8, 1002 protocol); reported through close */
    });
    ws.on('close', () => {
      this.closed = true;
      this.events?.onTransportClose('connection closed');
    });
    socket.on('drain', () => this.events?.onTransportDrain());
  }

  get bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  setHandlers(events: TransportEvents): void {
    this.events = events;
  }

  // ---- input: RFC 7395 frames -> the session's stream parser ----------------------------------

  private onMessage(data: RawData, isBinary: boolean): void {
    this.alive = true;
    if (this.inputDone || this.closed) return;
    if (isBinary) {
      this.streamError(new StreamError('not-well-formed', 'XMPP over WebSocket uses text messages only'));
      return;
    }
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    // Not an element, but harmless: clients used to TCP may send whitespace keepalives (§3.4).
    if (buf.length <= 64 && WHITESPACE.test(buf.toString('latin1'))) return;
    let el: Element;
    try {
      // One complete element per message (§3.3.3); the same restrictions and limits as streams.
      el = parseElement(buf, { ...this.limits, maxStanzaBytes: this.limits.maxStanzaBytes + FRAMING_SLACK });
    } catch (err) {
      this.streamError(err instanceof StreamError ? err : new StreamError('not-well-formed'));
      return;
    }
    const framing = el.attrs.xmlns === NS_FRAMING;
    if ((el.name === 'open' || el.name === 'close') && !framing) {
      this.streamError(new StreamError('invalid-namespace', `<${el.name}/> must be in ${NS_FRAMING}`));
      return;
    }
    if (framing && el.name === 'open') {
      if (this.seeOtherUri) {
        this.redirect(this.seeOtherUri);
        return;
      }
      this.events?.onTransportData(Buffer.from(streamHeaderFor(el), 'utf8'));
      return;
    }
    if (framing && el.name === 'close') {
      this.inputDone = true;
      this.events?.onTransportData(Buffer.from('</stream:stream>', 'utf8'));
      return;
    }
    if (framing) {
      this.streamError(new StreamError('unsupported-stanza-type', `unknown framing element <${el.name}/>`));
      return;
    }
    this.events?.onTransportData(buf);
  }

  /** A message the parser never sees (not one element, binary): the session reports the error. */
  private streamError(err: StreamError): void {
    this.inputDone = true;
    const ev = this.events;
    if (ev instanceof C2SSession && !ev.closed) ev.fail(err);
    else this.destroy();
  }

  /** §3.6.1: send the client elsewhere before any stream is opened. */
  private redirect(uri: string): void {
    this.inputDone = true;
    this.sendFrame(`<close xmlns='${NS_FRAMING}' see-other-uri='${escapeAttr(uri)}'/>`);
    this.close();
  }

  // ---- output: the session's serialized XML -> one element per message -------------------------

  write(data: string): void {
    if (this.closed) return;
    const text = this.outPending + data;
    this.outPending = '';
    let i = 0;
    let depth = 0;
    let start = 0;
    const n = text.length;
    while (i < n) {
      const lt = text.indexOf('<', i);
      if (lt < 0) break;
      if (text.startsWith('<?', lt)) {
        // The XML declaration before the stream header: RFC 7395 has none.
        const end = text.indexOf('?>', lt);
        if (end < 0) {
          this.outPending = text.slice(lt);
          return;
        }
        i = end + 2;
        continue;
      }
      const gt = tagEnd(text, lt);
      if (gt < 0) {
        this.outPending = text.slice(depth > 0 ? start : lt);
        return;
      }
      const closing = text.charCodeAt(lt + 1) === 0x2f; // '/'
      const selfClosing = !closing && text.charCodeAt(gt - 1) === 0x2f;
      if (depth === 0) {
        if (closing) {
          if (text.startsWith('</stream:stream', lt)) this.sendFrame(`<close xmlns='${NS_FRAMING}'/>`);
        } else if (text.startsWith('<stream:stream', lt) && /[\s>]/.test(text.charAt(lt + 14))) {
          this.sendFrame(openFor(text.slice(lt, gt + 1)));
        } else if (selfClosing) {
          this.sendFrame(qualify(text.slice(lt, gt + 1)));
        } else {
          start = lt;
          depth = 1;
        }
      } else if (closing) {
        if (--depth === 0) this.sendFrame(qualify(text.slice(start, gt + 1)));
      } else if (!selfClosing) {
        depth++;
      }
      i = gt + 1;
    }
    if (depth > 0) this.outPending = text.slice(start);
  }

  private sendFrame(frame: string): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(frame);
  }

  startTls(): Promise<void> {
    return Promise.reject(new Error('STARTTLS is not available over WebSocket'));
  }

  channelBindingTypes(): ChannelBindingType[] {
    return [];
  }

  channelBinding(): Buffer | null {
    return null;
  }

  pause(): void {
    // Stops reading the socket: the client's TCP window fills and it stops sending.
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.inputDone = true;
    this.ws.close(1000);
    // A peer that never answers the closing handshake must not keep the socket.
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  destroy(): void {
    this.closed = true;
    this.inputDone = true;
    this.ws.terminate();
  }

  /** Server shutdown: the session closes its stream (<close/>), or the connection just closes. */
  shutdown(): void {
    const ev = this.events;
    if (ev instanceof C2SSession && !ev.closed) ev.close('server shutting down');
    else this.close();
  }

  onceClosed(cb: () => void): void {
    if (this.ws.readyState === this.ws.CLOSED) cb();
    else this.ws.once('close', cb);
  }

  /** Liveness sweep: true when the connection was dropped. */
  sweep(): boolean {
    if (!this.alive) {
      this.destroy();
      return true;
    }
    this.alive = false;
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
    return false;
  }
}

/** Index of the '>' ending the tag that starts at `lt` (quotes honoured), or -1. */
function tagEnd(text: string, lt: number): number {
  let quote = 0;
  for (let j = lt + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (quote) {
      if (c === quote) quote = 0;
    } else if (c === 0x22 || c === 0x27) quote = c;
    else if (c === 0x3e) return j;
  }
  return -1;
}

const ATTR = /\s([^\s=/>]+)\s*=\s*(?:'([^']*)'|"([^"]*)")/g;

/** The session's stream header as RFC 7395 <open/> (§3.3.2): from, id, version, xml:lang, to. */
function openFor(header: string): string {
  let out = `<open xmlns='${NS_FRAMING}'`;
  for (const m of header.matchAll(ATTR)) {
    const name = m[1] as string;
    if (name === 'xmlns' || name.startsWith('xmlns:')) continue;
    // Values were escaped by the session; re-quoted with the same quote character.
    out += m[2] !== undefined ? ` ${name}='${m[2]}'` : ` ${name}="${m[3] ?? ''}"`;
  }
  return `${out}/>`;
}

/** §3.3.3: top-level elements carry their namespace themselves (no stream header to inherit from). */
function qualify(el: string): string {
  const nameEnd = el.search(/[\s/>]/);
  const name = el.slice(1, nameEnd);
  const startTag = el.slice(0, tagEnd(el, 0) + 1);
  if (name.startsWith('stream:')) {
    if (/\sxmlns:stream\s*=/.test(startTag)) return el;
    return `<${name} xmlns:stream='${NS.STREAM}'${el.slice(nameEnd)}`;
  }
  if (name.includes(':') || /\sxmlns\s*=/.test(startTag)) return el;
  return `<${name} xmlns='${NS.CLIENT}'${el.slice(nameEnd)}`;
}

/** The client's <open/> as the stream header the session's parser expects (§3.3.1). */
function streamHeaderFor(open: Element): string {
  let header = `<stream:stream xmlns='${NS.CLIENT}' xmlns:stream='${NS.STREAM}'`;
  for (const name of ['to', 'from', 'version', 'xml:lang', 'id']) {
    const v = open.attrs[name];
    if (typeof v === 'string') header += ` ${name}='${escapeAttr(v)}'`;
  }
  return `${header}>`;
}

function escapeAttr(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- the service: upgrades, liveness, shutdown ---------------------------------------------------

export interface WebSocketService {
  /** Open connections (tests, metrics). */
  readonly connections: ReadonlySet<WebSocketTransport>;
  /** Closes every stream (with <close/>) and waits briefly for the closing handshakes. */
  close(): Promise<void>;
}

function refuse(socket: Duplex, status: string, text: string): void {
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text) + 1}\r\nConnection: close\r\n\r\n${text}\n`);
}

/** Mounts the WebSocket endpoint when `http.websocket.enabled`. */
export function startWebSocket(server: Server, web: WebContainer): WebSocketService | null {
  const cfg = server.config.http.websocket;
  if (!cfg.enabled) return null;
  const limits = server.config.limits;
  const log = server.log.child({ transport: 'websocket' });
  const origins = new Set(cfg.origins.map((o) => o.toLowerCase().replace(/\/+$/, '')));
  const connections = new Set<WebSocketTransport>();
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.maxStanzaBytes + FRAMING_SLACK,
    perMessageDeflate: false,
    clientTracking: false,
    // Only called when the client offered protocols; the upgrade handler already required `xmpp`.
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  wss.on('error', (err) => log.warn({ err }, 'websocket server error'));

  web.onUpgrade(WEBSOCKET_PATH, (req: IncomingMessage, socket: Duplex, head: Buffer, info: RequestInfo) => {
    socket.on('error', () => {});
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim());
    // §3.1: without the xmpp subprotocol the client would not know the framing; refuse up front.
    if (!offered.includes(SUBPROTOCOL)) return refuse(socket, '400 Bad Request', "the 'xmpp' WebSocket subprotocol is required (RFC 7395)");
    const origin = req.headers.origin;
    if (origins.size && origin !== undefined && !origins.has(origin.toLowerCase())) {
      log.info({ addr: info.remoteAddress, origin }, 'websocket refused: origin not allowed');
      return refuse(socket, '403 Forbidden', 'origin not allowed');
    }
    if (server.config.tls.required && !info.secure) return refuse(socket, '403 Forbidden', 'TLS is required (use wss://)');
    wss.handleUpgrade(req, socket, head, (ws) => {
      const redirect = cfg.seeOtherUri && !(info.secure && cfg.seeOtherUri.startsWith('ws:')) ? cfg.seeOtherUri : null;
      const t = new WebSocketTransport(ws, socket, info.remoteAddress, req.socket.localPort ?? 0, info.secure, limits, redirect);
      connections.add(t);
      ws.once('close', () => connections.delete(t));
      let session: C2SSession | null = null;
      try {
        session = server.acceptConnection(t);
      } catch (err) {
        log.error({ err }, 'cannot set up websocket connection');
      }
      // Per-address caps (as for TCP): 1013 "try again later".
      if (!session) ws.close(1013, 'too many connections');
    });
  });

  const sweepTimer = cfg.pingSeconds > 0 ? setInterval(() => {
    for (const t of connections) if (t.sweep()) connections.delete(t);
  }, cfg.pingSeconds * 1000) : null;
  sweepTimer?.unref();

  return {
    connections,
    async close() {
      if (sweepTimer) clearInterval(sweepTimer);
      const all = [...connections];
      await Promise.all(
        all.map(
          (t) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                t.destroy();
                resolve();
              }, 1000);
              t.onceClosed(() => {
                clearTimeout(timer);
                resolve();
              });
              t.shutdown();
            }),
        ),
      );
      wss.close();
    },
  };
}

// ---- XEP-0156: host-meta -------------------------------------------------------------------------

/** Mounts /.well-known/host-meta (XRD) and host-meta.json (JRD). */
export function startHostMeta(server: Server, web: WebContainer): void {
  const http = server.config.http;
  const router = express.Router();
  const links = (req: Request): { rel: string; href: string }[] => {
    const base = baseUrls(req, http.publicUrl, web.ports, server.hostNames());
    const out: { rel: string; href: string }[] = [];
    if (http.websocket.enabled) out.push({ rel: REL_WEBSOCKET, href: `${base.ws}${WEBSOCKET_PATH}` });
    if (http.bosh.enabled) out.push({ rel: REL_BOSH, href: `${base.http}/http-bind` });
    return out;
  };
  const common = (res: Response) => {
    // XEP-0156 §4: readable by web clients on other origins (no credentials with `*`).
    res.setHeader('Access-Control-Allow-Origin', '*');
    if (http.publicUrl) {
      res.setHeader('Cache-Control', 'max-age=300');
    } else {
      // Built from the request's Host: no shared cache may hand it to other clients (issue 16 §6).
      res.setHeader('Cache-Control', 'private, max-age=300');
      res.setHeader('Vary', 'Host');
    }
  };
  router.get('/host-meta', (req, res) => {
    common(res);
    const body = links(req)
      .map((l) => `  <Link rel='${l.rel}' href='${escapeAttr(l.href)}'/>\n`)
      .join('');
    res.type('application/xrd+xml; charset=utf-8').send(`<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='${NS_XRD}'>\n${body}</XRD>\n`);
  });
  router.get('/host-meta.json', (req, res) => {
    common(res);
    res.type('application/json; charset=utf-8').send(`${JSON.stringify({ links: links(req) }, null, 2)}\n`);
  });
  web.mount('/.well-known', router);
}

/**
 * Base URLs (no trailing slash) of the WebSocket and HTTP endpoints: from `http.publicUrl`, else
 * from the request's Host header: the HTTPS port when it is on (wss://, https://), else the plain
 * port the request came to (ws://, http://). A Host that names none of `hosts` (the served XMPP
 * domains) and is not an IP address is not echoed: the first served domain is used instead, so a
 * forged Host cannot send clients, and their passwords, to another server.
 */
export function baseUrls(req: Request, publicUrl: string | undefined, ports: WebContainer['ports'], hosts: readonly string[] = []): { ws: string; http: string } {
  if (publicUrl) {
    const u = new URL(publicUrl);
    const path = u.pathname.replace(/\/+$/, '');
    const secure = u.protocol === 'https:';
    return { ws: `${secure ? 'wss' : 'ws'}://${u.host}${path}`, http: `${secure ? 'https' : 'http'}://${u.host}${path}` };
  }
  const rawHost = String(req.headers.host ?? '');
  // A Host header is client input: anything but a plain host[:port] falls back to loopback.
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.exec(rawHost);
  const name = (m?.[1] ?? '').toLowerCase();
  const known = m !== null && (isIP(name.replace(/^\[|\]$/g, '')) !== 0 || hosts.length === 0 || hosts.includes(name));
  const host = known ? rawHost : `${hosts[0] ?? '127.0.0.1'}:${req.socket.localPort ?? 80}`;
  const viaTls = 'encrypted' in req.socket && (req.socket as { encrypted?: boolean }).encrypted === true;
  if (viaTls) return { ws: `wss://${host}`, http: `https://${host}` };
  if (ports.https !== null) {
    const hostname = host.replace(/:\d{1,5}$/, '');
    return { ws: `wss://${hostname}:${ports.https}`, http: `https://${hostname}:${ports.https}` };
  }
  return { ws: `ws://${host}`, http: `http://${host}` };
}
