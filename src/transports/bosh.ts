// BOSH at /http-bind (issue 6): XEP-0124 "Bidirectional-streams Over Synchronous HTTP" carrying an
// XMPP stream as XEP-0206 "XMPP Over BOSH". Each BOSH session is a Transport feeding the same
// C2SSession as TCP, so SASL, binding, XEP-0198 and every module work unchanged.
//
// Implemented:
//   XEP-0124 §7 <body/> wrapper, §7-8 session creation request/response (wait, hold, requests,
//     inactivity, polling, maxpause, ver negotiated within `http.bosh` caps; CSPRNG sid),
//   §8 payloads: child elements of a request are fed to the session's stream parser in rid order;
//     what the session writes is returned in held responses (long polling, empty response at `wait`,
//     `hold` enforced by answering the oldest held request),
//   §10 inactivity (session ends without telling the client) and `pause` (up to maxpause),
//   §11 overactivity and §12 polling sessions (policy-violation),
//   §13 terminate by the client (payloads forwarded, then the stream is closed gracefully),
//   §14.2 in-order forwarding with out-of-order rids buffered inside the window (item-not-found
//     outside it), §14.3 replay of the cached response for a repeated rid, recoverable
//     `type='error'` on the superseded HTTP request when an unanswered rid is repeated,
//   §17.2 terminal binding conditions (HTTP 200 with type='terminate' condition=...).
//   XEP-0206 §3-5: xmpp:version, stream features in the first response (xmlns:stream on <body/>),
//     §5 xmpp:restartlogic / xmpp:restart='true' after SASL, §7 remote-stream-error carrying the
//     <stream:error/>.
// Not implemented: §9 acknowledgements (no 'ack' in responses, which tells clients so), §15 keys,
// §16 multiple streams, legacy HTTP error codes (§17.1, deprecated), HTTP compression.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import express, { type Request, type Response, type Router } from 'express';
import { Element } from 'ltx';
import type { ChannelBindingType } from '../core/transport.js';
import type { Server } from '../core/server.js';
import type { Transport, TransportEvents } from '../core/transport.js';
import { parseElement } from '../xmpp/parser.js';
import { NS } from '../xmpp/ns.js';
import type { WebContainer } from './web.js';

export const NS_HTTPBIND = 'http://jabber.org/protocol/httpbind';
export const NS_XBOSH = 'urn:xmpp:xbosh';
export const BOSH_PATH = '/http-bind';

/** The highest XEP-0124 version implemented. */
const BOSH_VERSION: [number, number] = [1, 11];
const CONTENT_TYPE = 'text/xml; charset=utf-8';
const STREAM_CLOSE = '</stream:stream>';
/** rid values must stay exact in IEEE doubles (XEP-0124 §14.1). */
const RID = /^[0-9]{1,16}$/;
/** A client repeating unanswered rids this many times in a row is abusing §14.3 to poll. */
const MAX_REPEATS = 8;
/** Slack for timer jitter when comparing request intervals with `polling`. */
const POLLING_SLACK_MS = 100;

export interface BoshLimits {
  maxWait: number;
  maxHold: number;
  maxRequests: number;
  maxInactivity: number;
  maxPause: number;
  polling: number;
  maxBodyBytes: number;
  origins: readonly string[];
}

/** One HTTP request waiting for its turn (buffered) or for a response (held). */
interface BoshRequest {
  rid: number;
  res: Response;
  children: Element[];
  restart: boolean;
  pause: number | null;
  terminate: boolean;
  creation: boolean;
  /** Wrapper namespace declarations the payloads may use (xmlns:prefix -> uri). */
  prefixes: Record<string, string>;
  timer: NodeJS.Timeout | null;
}

interface Negotiated {
  wait: number;
  hold: number;
  requests: number;
  inactivity: number;
  polling: number;
  maxpause: number;
  ver: string;
  lang: string;
}

/** Builds a <body/> response. `inner` is already-serialized XML. */
function bodyXml(attrs: Record<string, string>, inner = ''): string {
  let s = `<body xmlns='${NS_HTTPBIND}' xmlns:xmpp='${NS_XBOSH}' xmlns:stream='${NS.STREAM}'`;
  for (const [k, v] of Object.entries(attrs)) s += ` ${k}='${escapeAttr(v)}'`;
  return inner ? `${s}>${inner}</body>` : `${s}/>`;
}

function terminateXml(condition?: string, inner = ''): string {
  return bodyXml(condition ? { type: 'terminate', condition } : { type: 'terminate' }, inner);
}

/**
 * One BOSH session: the Transport of one C2SSession. It owns the rid window and the HTTP requests
 * held open for the client.
 */
export class BoshTransport implements Transport {
  readonly kind = 'bosh' as const;
  readonly sid = randomBytes(24).toString('base64url');
  readonly canStartTls = false;
  private events: TransportEvents | null = null;
  /** Highest rid whose payloads were forwarded (all lower ones were too). */
  private lastRid: number;
  /** Requests with a rid above lastRid + 1, waiting for the gap to fill (§14.2). */
  private readonly waiting = new Map<number, BoshRequest>();
  /** Processed requests not yet answered, oldest (lowest rid) first. */
  private readonly held: BoshRequest[] = [];
  /** Responses to the most recent requests, for replay (§14.3). */
  private readonly cache = new Map<number, string>();
  /** Serialized output the session wrote and the client has not been sent yet. */
  private out: string[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  private inactivityTimer: NodeJS.Timeout | null = null;
  /** Inactivity allowed until the next request, after a `pause` (§10). */
  private pauseSeconds: number | null = null;
  private paused = false;
  private pausedInput: Buffer[] = [];
  private pausedBytes = 0;
  /** Arrival time of the previous new request and whether it was empty (§11, §12). */
  private lastArrival = 0;
  private lastEmpty = false;
  /** The response to the previous new request was sent and carried no payload (§12). */
  private lastAnsweredEmpty = false;
  private repeats = 0;
  /** The stream id of the session's last header (XEP-0206 'authid'). */
  private streamId = '';
  /** The session ended; `endCondition`/`endPayload` go into the next terminate response. */
  private ended = false;
  private endCondition: string | undefined;
  private endPayload = '';
  private closeReported = false;

  constructor(
    private readonly service: BoshService,
    readonly remoteAddress: string,
    readonly localPort: number,
    readonly secure: boolean,
    readonly host: string,
    readonly params: Negotiated,
    firstRid: number,
  ) {
    this.lastRid = firstRid - 1;
  }

  // ---- Transport ----------------------------------------------------------------------------

  get bufferedBytes(): number {
    return this.outBytes;
  }

  setHandlers(events: TransportEvents): void {
    this.events = events;
  }

  write(data: string): void {
    if (this.ended) return;
    let s = data;
    // The session writes its stream header as one write (RFC 6120 §4.2); BOSH has no header of its
    // own: the <body/> wrapper replaces it (XEP-0206 §3). Keep the id for 'authid'.
    if (s.startsWith('<?xml') || s.startsWith('<stream:stream')) {
      const end = s.indexOf('>', s.indexOf('<stream:stream'));
      const header = s.slice(0, end + 1);
      const id = /\sid='([^']*)'/.exec(header);
      if (id) this.streamId = id[1] as string;
      s = s.slice(end + 1);
    }
    let closing = false;
    if (s.endsWith(STREAM_CLOSE)) {
      s = s.slice(0, -STREAM_CLOSE.length);
      closing = true;
    }
    if (s.startsWith('<stream:error')) {
      // XEP-0206 §7: stream errors become remote-stream-error with the error inside.
      this.end('remote-stream-error', s);
      return;
    }
    if (s) {
      this.out.push(s);
      this.outBytes += Buffer.byteLength(s);
      this.scheduleFlush();
    }
    if (closing) this.end(undefined);
  }

  startTls(): Promise<void> {
    return Promise.reject(new Error('BOSH negotiates TLS at the HTTP layer'));
  }

  channelBindingTypes(): ChannelBindingType[] {
    // The HTTP connection may change between requests: nothing to bind to.
    return [];
  }

  channelBinding(): Buffer | null {
    return null;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const queued = this.pausedInput;
    this.pausedInput = [];
    this.pausedBytes = 0;
    for (const chunk of queued) {
      if (this.paused) {
        this.pausedInput.push(chunk);
        this.pausedBytes += chunk.length;
        continue;
      }
      this.events?.onTransportData(chunk);
    }
  }

  close(): void {
    this.end(undefined);
  }

  destroy(): void {
    this.out = [];
    this.outBytes = 0;
    this.end('undefined-condition');
  }

  // ---- input --------------------------------------------------------------------------------

  /** Feeds bytes to the session (held back while the session throttles us). */
  private feed(xml: string): void {
    const chunk = Buffer.from(xml, 'utf8');
    if (!this.paused) {
      this.events?.onTransportData(chunk);
      return;
    }
    // Throttled: requests are still answered (at `wait` or by `hold`), so a client that keeps
    // sending could grow this without bound; a few bodies' worth is all it gets.
    this.pausedBytes += chunk.length;
    if (this.pausedBytes > this.service.limits.maxBodyBytes * 4) {
      this.pausedInput = [];
      this.pausedBytes = 0;
      this.out = [];
      this.outBytes = 0;
      this.end('policy-violation');
      return;
    }
    this.pausedInput.push(chunk);
  }

  /** The stream header the client would have sent on TCP (XEP-0206 §3, and §5 on restart). */
  openStream(from?: string): void {
    const fromAttr = from ? ` from='${escapeAttr(from)}'` : '';
    this.feed(
      `<stream:stream xmlns='${NS.CLIENT}' xmlns:stream='${NS.STREAM}' to='${escapeAttr(this.host)}' version='1.0' xml:lang='${escapeAttr(this.params.lang)}'${fromAttr}>`,
    );
  }

  /** The session creation request: held until the stream features are written (XEP-0206 §4). */
  startCreation(req: BoshRequest): void {
    this.lastRid = req.rid;
    this.lastArrival = Date.now();
    this.lastEmpty = true;
    this.hold(req);
  }

  /** A request for this session (§8), with the rid rules of §11 and §14. */
  request(req: BoshRequest, secure: boolean): void {
    if (this.ended) {
      // The session ended while no request was held: the client learns it now.
      this.answerRaw(req.res, terminateXml(this.endCondition, this.endPayload));
      this.service.forget(this);
      return;
    }
    if (this.secure && !secure) {
      // Never let a session negotiated over TLS continue in the clear.
      this.fatal(req.res, 'policy-violation');
      return;
    }
    this.clearInactivity();
    const rid = req.rid;
    const isRepeat = rid <= this.lastRid || this.waiting.has(rid);
    if (isRepeat) {
      this.repeat(req);
      return;
    }
    if (rid > this.lastRid + this.params.requests) {
      this.fatal(req.res, 'item-not-found');
      return;
    }
    this.repeats = 0;
    const now = Date.now();
    const open = this.held.length + this.waiting.size;
    const empty = req.children.length === 0 && !req.restart;
    const special = req.pause !== null || req.terminate;
    // §11: more simultaneous requests than `requests` (one more to pause or terminate).
    if (open >= this.params.requests + (special ? 1 : 0)) {
      this.fatal(req.res, 'policy-violation');
      return;
    }
    // §11: `requests` empty requests open at once, the last two within `polling` seconds.
    const pollingMs = this.params.polling * 1000 - POLLING_SLACK_MS;
    if (this.params.polling > 0 && empty && !special && open + 1 >= this.params.requests && open > 0 && this.lastEmpty && now - this.lastArrival < pollingMs) {
      this.fatal(req.res, 'policy-violation');
      return;
    }
    // §12: polling sessions (hold 0) may not poll faster than `polling` when nothing came back.
    if (this.params.polling > 0 && this.params.hold === 0 && empty && !special && this.lastEmpty && this.lastAnsweredEmpty && now - this.lastArrival < pollingMs) {
      this.fatal(req.res, 'policy-violation');
      return;
    }
    if (req.pause !== null && req.pause > this.params.maxpause) {
      this.fatal(req.res, 'policy-violation');
      return;
    }
    this.lastArrival = now;
    this.lastEmpty = empty;
    this.lastAnsweredEmpty = false;
    this.pauseSeconds = null;
    if (rid !== this.lastRid + 1) {
      this.waiting.set(rid, req);
      return;
    }
    this.process(req);
    for (let next = this.waiting.get(this.lastRid + 1); next && !this.ended; next = this.waiting.get(this.lastRid + 1)) {
      this.waiting.delete(next.rid);
      this.process(next);
    }
  }

  /** §14.3: a rid seen before. */
  private repeat(req: BoshRequest): void {
    if (++this.repeats > MAX_REPEATS) {
      this.fatal(req.res, 'policy-violation');
      return;
    }
    const pending = this.waiting.get(req.rid) ?? this.held.find((r) => r.rid === req.rid);
    if (pending) {
      // The earlier HTTP request is presumably dead; answer it with a recoverable error and give
      // the eventual response to the new one.
      this.answerRaw(pending.res, bodyXml({ type: 'error' }));
      pending.res = req.res;
      return;
    }
    const cached = this.cache.get(req.rid);
    if (cached !== undefined) {
      this.answerRaw(req.res, cached);
      this.startInactivityIfIdle();
      return;
    }
    this.fatal(req.res, 'item-not-found');
  }

  private process(req: BoshRequest): void {
    this.lastRid = req.rid;
    if (req.restart) {
      // XEP-0206 §5: a new stream after SASL; the session reset its parser when it sent <success/>.
      this.openStream();
    }
    for (const child of req.children) {
      if (this.ended) break;
      this.feed(serializeChild(child, req.prefixes));
    }
    if (req.terminate && !this.ended) {
      // §13: forward the payloads (e.g. unavailable presence), then close the stream gracefully.
      this.feed(STREAM_CLOSE);
      if (!this.ended) this.end(undefined);
    }
    if (this.ended) {
      this.hold(req);
      this.flush();
      return;
    }
    if (req.pause !== null) {
      // §10: answer everything at once (the pause response carries no payload) and allow a longer
      // silence until the next request.
      this.pauseSeconds = req.pause;
      for (const r of this.held.splice(0)) this.answer(r, '');
      this.answerRaw(req.res, bodyXml({}));
      this.startInactivityIfIdle();
      return;
    }
    this.hold(req);
  }

  private hold(req: BoshRequest): void {
    this.held.push(req);
    if (this.params.wait > 0) {
      req.timer = setTimeout(() => {
        req.timer = null;
        const i = this.held.indexOf(req);
        if (i === -1) return;
        this.held.splice(i, 1);
        this.answer(req, this.takeOutput());
        this.startInactivityIfIdle();
      }, this.params.wait * 1000);
      req.timer.unref();
    }
    this.scheduleFlush();
  }

  // ---- output -------------------------------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Writes of one tick (several stanzas, a stream error and the close) go out in one response.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private takeOutput(): string {
    const s = this.out.join('');
    this.out = [];
    this.outBytes = 0;
    return s;
  }

  private flush(): void {
    if (this.ended) {
      // §13 / §17.2: the oldest open request carries the terminate, the others come back empty.
      const first = this.held.shift();
      const rest = [...this.held.splice(0), ...this.waiting.values()];
      this.waiting.clear();
      if (first) {
        this.clearTimer(first);
        this.answerRaw(first.res, terminateXml(this.endCondition, this.takeOutput() + this.endPayload), first);
        this.service.forget(this);
      }
      for (const r of rest) {
        this.clearTimer(r);
        this.answerRaw(r.res, bodyXml({}));
      }
      return;
    }
    if (this.outBytes > 0) {
      const first = this.held.shift();
      if (first) this.answer(first, this.takeOutput());
    }
    // `hold`: never keep more requests than agreed; the creation request waits for the features.
    while (this.held.length > Math.max(this.params.hold, this.held[0]?.creation && this.outBytes === 0 ? 1 : 0)) {
      this.answer(this.held.shift() as BoshRequest, this.takeOutput());
    }
    this.startInactivityIfIdle();
  }

  private answer(req: BoshRequest, payload: string): void {
    this.clearTimer(req);
    const attrs: Record<string, string> = {};
    if (req.creation) Object.assign(attrs, this.creationAttrs());
    const xml = bodyXml(attrs, payload);
    if (req.rid === this.lastRid || this.held.length === 0) this.lastAnsweredEmpty = payload === '';
    this.answerRaw(req.res, xml, req);
  }

  /** XEP-0124 §7.2 / XEP-0206 §4: the session creation response. */
  private creationAttrs(): Record<string, string> {
    const p = this.params;
    const a: Record<string, string> = {
      sid: this.sid,
      wait: String(p.wait),
      hold: String(p.hold),
      requests: String(p.requests),
      inactivity: String(p.inactivity),
      polling: String(p.polling),
      maxpause: String(p.maxpause),
      ver: p.ver,
      from: this.host,
      secure: this.secure ? 'true' : 'false',
      'xmpp:version': '1.0',
      'xmpp:restartlogic': 'true',
    };
    if (this.streamId) a.authid = this.streamId;
    return a;
  }

  /** Sends a response and, for a request of the rid sequence, keeps it for replay (§14.3). */
  private answerRaw(res: Response, xml: string, req?: BoshRequest): void {
    if (req && req.pause === null) {
      this.cache.set(req.rid, xml);
      while (this.cache.size > this.params.requests) this.cache.delete(this.cache.keys().next().value as number);
    }
    sendXml(res, 200, xml);
  }

  private clearTimer(req: BoshRequest): void {
    if (req.timer) clearTimeout(req.timer);
    req.timer = null;
  }

  // ---- ending -------------------------------------------------------------------------------

  /** A terminal binding condition caused by this request (§17.2): the session ends. */
  private fatal(res: Response, condition: string): void {
    this.service.server.log.info({ sid: this.sid, condition }, 'BOSH session terminated');
    sendXml(res, 200, terminateXml(condition));
    this.endCondition = condition;
    this.ended = true;
    for (const r of [...this.held.splice(0), ...this.waiting.values()]) {
      this.clearTimer(r);
      sendXml(r.res, 200, terminateXml(condition));
    }
    this.waiting.clear();
    this.clearInactivity();
    this.service.forget(this);
    this.reportClose(`bosh: ${condition}`);
  }

  /** The stream ended (server side, or the client's terminate). */
  private end(condition: string | undefined, payload = ''): void {
    if (this.ended) return;
    this.ended = true;
    this.endCondition = condition;
    this.endPayload = payload;
    this.clearInactivity();
    if (this.held.length) this.scheduleFlush();
    else {
      // Nobody to tell now: the next request learns it, or the sid is forgotten after a while.
      const t = setTimeout(() => this.service.forget(this), Math.max(this.params.inactivity, 1) * 1000);
      t.unref();
    }
    this.reportClose(condition ? `bosh: ${condition}` : 'bosh: stream closed');
  }

  private reportClose(reason: string): void {
    if (this.closeReported) return;
    this.closeReported = true;
    this.events?.onTransportClose(reason);
  }

  private startInactivityIfIdle(): void {
    if (this.ended || this.held.length || this.waiting.size || this.inactivityTimer) return;
    const seconds = this.pauseSeconds ?? this.params.inactivity;
    this.inactivityTimer = setTimeout(() => {
      this.inactivityTimer = null;
      // §10: assume the client is gone; later requests are answered as for an unknown sid.
      this.ended = true;
      this.endCondition = 'item-not-found';
      this.out = [];
      this.outBytes = 0;
      this.service.forget(this);
      this.reportClose('bosh: inactivity timeout');
    }, seconds * 1000);
    this.inactivityTimer.unref();
  }

  private clearInactivity(): void {
    if (this.inactivityTimer) clearTimeout(this.inactivityTimer);
    this.inactivityTimer = null;
  }

  /** Server shutdown: drop timers (the session itself is closed by the server). */
  shutdown(): void {
    this.clearInactivity();
    for (const r of [...this.held.splice(0), ...this.waiting.values()]) {
      this.clearTimer(r);
      sendXml(r.res, 200, terminateXml('system-shutdown'));
    }
    this.waiting.clear();
  }
}

/** The /http-bind endpoint and its sessions. */
export class BoshService {
  private readonly sessions = new Map<string, BoshTransport>();
  readonly router: Router;

  constructor(
    readonly server: Server,
    private readonly requestInfo: WebContainer['requestInfo'],
    readonly limits: BoshLimits,
  ) {
    const router = express.Router();
    router.options('/', (req, res) => {
      if (!this.cors(req, res)) return;
      res.setHeader('Access-Control-Allow-Methods', 'POST, OPTIONS');
      res.setHeader('Access-Control-Allow-Headers', 'Content-Type');
      res.setHeader('Access-Control-Max-Age', '86400');
      res.status(204).end();
    });
    router.post('/', (req, res, next) => {
      this.handle(req, res).catch(next);
    });
    router.all('/', (_req, res) => {
      res.setHeader('Allow', 'POST, OPTIONS');
      res.status(405).type('text/plain').send('BOSH: POST <body/> elements here (XEP-0124)\n');
    });
    this.router = router;
  }

  get size(): number {
    return this.sessions.size;
  }

  forget(t: BoshTransport): void {
    if (this.sessions.get(t.sid) === t) this.sessions.delete(t.sid);
  }

  close(): void {
    for (const t of this.sessions.values()) t.shutdown();
  }

  /** CORS for browser clients: any origin by default, or the configured list. */
  private cors(req: Request, res: Response): boolean {
    const origin = req.headers.origin;
    const allowed = this.limits.origins;
    if (allowed.length === 0) {
      res.setHeader('Access-Control-Allow-Origin', '*');
      return true;
    }
    res.setHeader('Vary', 'Origin');
    if (origin === undefined) return true; // not a browser cross-origin request
    if (!allowed.includes(origin)) {
      res.status(403).type('text/plain').send('origin not allowed\n');
      return false;
    }
    res.setHeader('Access-Control-Allow-Origin', origin);
    return true;
  }

  private async handle(req: Request, res: Response): Promise<void> {
    if (!this.cors(req, res)) return;
    res.setHeader('Cache-Control', 'no-store');
    const raw = await readBody(req, this.limits.maxBodyBytes);
    if (raw === null) {
      // Too large to read: the sid is unknown, so only this request is refused.
      res.setHeader('Connection', 'close');
      sendXml(res, 413, terminateXml('policy-violation'));
      return;
    }
    const l = this.server.config.limits;
    let body: Element;
    try {
      // The wrapper is depth 1, stanzas start at depth 2.
      body = parseElement(raw, { maxStanzaBytes: this.limits.maxBodyBytes, maxDepth: l.maxDepth + 1, maxAttributes: l.maxAttributes });
    } catch {
      sendXml(res, 200, terminateXml('bad-request'));
      return;
    }
    if (body.name !== 'body' || body.attrs.xmlns !== NS_HTTPBIND) {
      sendXml(res, 200, terminateXml('bad-request'));
      return;
    }
    const rid = parseRid(body.attrs.rid);
    if (rid === null) {
      sendXml(res, 200, terminateXml('bad-request'));
      return;
    }
    const children: Element[] = [];
    for (const c of body.children) {
      if (c instanceof Element) children.push(c);
      else if (typeof c === 'string' && !/^[ \t\r\n]*$/.test(c)) {
        sendXml(res, 200, terminateXml('bad-request'));
        return;
      }
    }
    const prefixes: Record<string, string> = {};
    for (const [k, v] of Object.entries(body.attrs)) if (k.startsWith('xmlns:')) prefixes[k] = String(v);
    const pauseAttr = body.attrs.pause;
    const pause = pauseAttr === undefined ? null : /^[0-9]{1,6}$/.test(String(pauseAttr)) ? Number(pauseAttr) : NaN;
    if (Number.isNaN(pause)) {
      sendXml(res, 200, terminateXml('bad-request'));
      return;
    }
    const request: BoshRequest = {
      rid,
      res,
      children,
      restart: xboshAttr(body, 'restart') === 'true' || xboshAttr(body, 'restart') === '1',
      pause,
      terminate: body.attrs.type === 'terminate',
      creation: false,
      prefixes,
      timer: null,
    };
    const info = this.requestInfo(req as IncomingMessage);
    const sid = body.attrs.sid;
    if (sid === undefined) {
      this.create(body, request, info.remoteAddress, info.secure, req.socket.localPort ?? 0);
      return;
    }
    const t = this.sessions.get(String(sid));
    if (!t) {
      sendXml(res, 200, terminateXml('item-not-found'));
      return;
    }
    t.request(request, info.secure);
  }

  /** XEP-0124 §7.1 / XEP-0206 §3: a session creation request. */
  private create(body: Element, req: BoshRequest, remoteAddress: string, secure: boolean, localPort: number): void {
    const a = body.attrs;
    const to = a.to === undefined ? '' : String(a.to).toLowerCase();
    if (!to) {
      sendXml(req.res, 200, terminateXml('improper-addressing'));
      return;
    }
    if (!this.server.isLocalHost(to)) {
      sendXml(req.res, 200, terminateXml('host-unknown'));
      return;
    }
    const xmppVersion = xboshAttr(body, 'version');
    if (xmppVersion !== undefined && !/^1\.\d+$/.test(xmppVersion)) {
      sendXml(req.res, 200, terminateXml('bad-request'));
      return;
    }
    const lim = this.limits;
    const int = (v: unknown, dflt: number): number => (v !== undefined && /^[0-9]{1,6}$/.test(String(v)) ? Number(v) : dflt);
    const wait = Math.min(Math.max(int(a.wait, lim.maxWait), 1), lim.maxWait);
    const maxRequests = Math.max(lim.maxRequests, 1);
    const hold = Math.min(int(a.hold, 1), lim.maxHold, maxRequests - 1);
    const requests = Math.min(hold + 1, maxRequests);
    const polling = lim.polling;
    // §12: a polling session needs a longer inactivity than its polling interval.
    const inactivity = hold === 0 ? lim.maxInactivity + polling : lim.maxInactivity;
    const lang = a['xml:lang'] !== undefined && /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/.test(String(a['xml:lang'])) ? String(a['xml:lang']) : 'en';
    const params: Negotiated = { wait, hold, requests, inactivity, polling, maxpause: lim.maxPause, ver: negotiateVersion(a.ver), lang };
    const t = new BoshTransport(this, remoteAddress, localPort, secure, to, params, req.rid);
    const session = this.server.acceptConnection(t);
    if (!session) {
      // Per-address connection caps (shared with TCP and WebSocket).
      sendXml(req.res, 200, terminateXml('policy-violation'));
      return;
    }
    this.sessions.set(t.sid, t);
    req.creation = true;
    t.startCreation(req);
    const from = a.from !== undefined ? String(a.from) : undefined;
    t.openStream(from);
  }
}

/** Mounts BOSH on the web container when `http.bosh.enabled`. */
export function startBosh(server: Server, web: WebContainer): BoshService | null {
  const cfg = server.config.http.bosh;
  if (!cfg.enabled) return null;
  const service = new BoshService(server, web.requestInfo, cfg);
  web.mount(BOSH_PATH, service.router);
  return service;
}

// ---- helpers --------------------------------------------------------------------------------

function sendXml(res: Response, status: number, xml: string): void {
  if (res.headersSent || res.writableEnded || res.destroyed) return;
  res.status(status);
  res.setHeader('Content-Type', CONTENT_TYPE);
  res.end(xml);
}

/** Reads the request body, or null when it exceeds `max` bytes. */
function readBody(req: Request, max: number): Promise<Buffer | null> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    req.resume();
    return Promise.resolve(null);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      size += c.length;
      if (size > max) {
        done = true;
        resolve(null);
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks));
    });
    req.on('error', (err) => {
      if (done) return;
      done = true;
      reject(err);
    });
  });
}

function parseRid(v: unknown): number | null {
  if (v === undefined || !RID.test(String(v))) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** An attribute in the urn:xmpp:xbosh namespace, whatever prefix the client bound to it. */
function xboshAttr(body: Element, local: string): string | undefined {
  for (const [k, v] of Object.entries(body.attrs)) {
    if (k.startsWith('xmlns:') && v === NS_XBOSH) {
      const val = body.attrs[`${k.slice(6)}:${local}`];
      if (val !== undefined) return String(val);
    }
  }
  return undefined;
}

/** The lower of the client's and our XEP-0124 version (§7.1 'ver'). */
function negotiateVersion(v: unknown): string {
  const m = v === undefined ? null : /^(\d{1,4})\.(\d{1,4})$/.exec(String(v));
  if (!m) return `${BOSH_VERSION[0]}.${BOSH_VERSION[1]}`;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  if (major < BOSH_VERSION[0] || (major === BOSH_VERSION[0] && minor < BOSH_VERSION[1])) return `${major}.${minor}`;
  return `${BOSH_VERSION[0]}.${BOSH_VERSION[1]}`;
}

/**
 * A payload serialized for the session's stream parser, with the namespace declarations it uses
 * from the wrapper copied onto it (it is parsed on its own, outside the <body/>).
 */
function serializeChild(child: Element, wrapperNs: Record<string, string>): string {
  const needed = new Set<string>();
  const stack: Element[] = [child];
  while (stack.length) {
    const el = stack.pop() as Element;
    const names = [el.name, ...Object.keys(el.attrs)];
    for (const n of names) {
      const i = n.indexOf(':');
      if (i > 0) {
        const p = n.slice(0, i);
        if (p !== 'xmlns' && p !== 'xml') needed.add(p);
      }
    }
    for (const c of el.children) if (c instanceof Element) stack.push(c);
  }
  for (const p of needed) {
    const key = `xmlns:${p}`;
    const uri = wrapperNs[key];
    if (uri !== undefined && child.attrs[key] === undefined) child.attrs[key] = uri;
  }
  return child.toString();
}

function escapeAttr(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
