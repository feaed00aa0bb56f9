// A cheap XMPP client on a raw socket for the load generator: no XML parser. Negotiation waits for
// regular expressions on the received text (stream features, <success/>, <jid>, iq ids), which is
// enough for servers that behave; once logged in, received data is only scanned for the benchmark's
// tags, `<body>t:S:Q:T<` or `<status>t:S:Q:T<` (S sender index, Q its sequence number, T the send
// time in µs on the shared clock, see now() below), and for `type='error'`.
import { createHash, createHmac, pbkdf2, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

/** Microseconds on a clock shared by every process of the machine (wall clock, monotonic within a process). */
export function nowUs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export type Mechanism = 'PLAIN' | 'SCRAM-SHA-1';

export interface LoginOptions {
  host: string;
  port: number;
  domain: string;
  user: string; // local part
  password: string;
  tls: boolean;
  mech: Mechanism;
  resource: string;
  rosterGet: boolean;
  presence: boolean;
  timeoutMs: number;
}

/** Called for every tag found: the receiving client, sender index, sequence number, send time (µs). */
export type TagHandler = (c: XmppClient, sender: number, seq: number, stamp: number) => void;

const TAG_RE = /<(?:body|status)>t:(\d+):(\d+):(\d+)</g;
const ERR_RE = /type=['"]error['"]/g;
const q = `['"]`;

interface Waiter {
  re: RegExp;
  resolve: (m: RegExpExecArray) => void;
  reject: (e: Error) => void;
}

export class LoginError extends Error {}

export class XmppClient {
  sock: net.Socket;
  private buf = '';
  private scanPos = 0;
  private waiters: Waiter[] = [];
  /** Set once logged in: every received tag goes here. */
  onTag: TagHandler | null = null;
  closed = false;
  /** `type='error'` occurrences seen after login (error stanzas). */
  errors = 0;
  /** First stream error or error stanza seen, for diagnostics. */
  firstError = '';
  jid = '';

  constructor(
    readonly index: number,
    host: string,
    port: number,
  ) {
    this.sock = net.connect({ port, host });
    this.sock.setNoDelay(true);
    this.attach(this.sock);
  }

  private attach(sock: net.Socket): void {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => {
      if (!this.firstError) this.firstError = `socket: ${e.message}`;
    });
    sock.on('close', () => {
      if (sock !== this.sock) return;
      this.closed = true;
      const err = new LoginError(`connection closed${this.firstError ? ` (${this.firstError})` : ''}${this.buf ? `; last data: ${this.buf.slice(-300)}` : ''}`);
      for (const w of this.waiters.splice(0)) w.reject(err);
    });
  }

  private onData(d: string): void {
    this.buf += d;
    if (this.onTag) {
      const cb = this.onTag;
      const b = this.buf;
      TAG_RE.lastIndex = this.scanPos;
      let end = -1;
      for (let m = TAG_RE.exec(b); m; m = TAG_RE.exec(b)) {
        cb(this, Number(m[1]), Number(m[2]), Number(m[3]));
        end = TAG_RE.lastIndex;
      }
      if (end >= 0) this.scanPos = end;
      if (d.includes('error')) {
        ERR_RE.lastIndex = 0;
        while (ERR_RE.exec(d)) this.errors++;
        if (!this.firstError && this.errors) this.firstError = d.slice(0, 400);
      }
    }
    if (this.waiters.length) this.runWaiters();
    if (this.onTag && !this.waiters.length) {
      // Keep only what may still hold a partial tag: from the last '<' after the last match.
      const lt = this.buf.lastIndexOf('<');
      const cut = lt > this.scanPos ? lt : this.scanPos;
      if (cut > 0) this.buf = this.buf.slice(cut);
      this.scanPos = 0;
    }
    if (!this.firstError) {
      const se = this.buf.indexOf('<stream:error');
      if (se >= 0) this.firstError = this.buf.slice(se, se + 300);
    }
  }

  private runWaiters(): void {
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i] as Waiter;
      const m = w.re.exec(this.buf);
      if (m) {
        const consumed = m.index + m[0].length;
        this.buf = this.buf.slice(consumed);
        this.scanPos = Math.max(0, this.scanPos - consumed);
        this.waiters.splice(i, 1);
        i--;
        w.resolve(m);
      }
    }
  }

  wait(re: RegExp): Promise<RegExpExecArray> {
    const m = re.exec(this.buf);
    if (m) {
      const consumed = m.index + m[0].length;
      this.buf = this.buf.slice(consumed);
      this.scanPos = Math.max(0, this.scanPos - consumed);
      return Promise.resolve(m);
    }
    if (this.closed) return Promise.reject(new LoginError(`connection closed${this.firstError ? ` (${this.firstError})` : ''}`));
    return new Promise((resolve, reject) => this.waiters.push({ re, resolve, reject }));
  }

  write(s: string): void {
    if (!this.closed) this.sock.write(s);
  }

  private startTls(domain: string): Promise<void> {
    const raw = this.sock;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    this.buf = '';
    this.scanPos = 0;
    const t = tls.connect({ socket: raw, servername: domain, rejectUnauthorized: false });
    this.sock = t;
    this.attach(t);
    return new Promise((resolve, reject) => {
      t.once('secureConnect', () => resolve());
      t.once('error', reject);
    });
  }

  private async features(domain: string): Promise<string> {
    this.write(`<?xml version='1.0'?><stream:stream to='${domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`);
    const m = await this.wait(/<stream:features[\s\S]*?<\/stream:features>|<stream:features[^>]*\/>/);
    return m[0];
  }

  /** Stream, (STARTTLS,) SASL, bind, (roster get,) (initial presence). Rejects with LoginError. */
  async login(o: LoginOptions): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => {
        rej(new LoginError(`login of ${o.user} timed out after ${o.timeoutMs} ms${this.firstError ? ` (${this.firstError})` : ''}`));
        this.destroy();
      }, o.timeoutMs);
    });
    try {
      await Promise.race([this.negotiate(o), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async negotiate(o: LoginOptions): Promise<void> {
    let f = await this.features(o.domain);
    if (o.tls) {
      if (!f.includes('<starttls')) throw new LoginError(`server does not offer STARTTLS: ${f.slice(0, 300)}`);
      this.write(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
      await this.wait(/<proceed[^>]*\/>|<proceed[^>]*>\s*<\/proceed>|<failure[^>]*(?:\/>|>[\s\S]*?<\/failure>)/).then((m) => {
        if (m[0].startsWith('<failure')) throw new LoginError(`STARTTLS refused: ${m[0]}`);
      });
      await this.startTls(o.domain);
      f = await this.features(o.domain);
    }
    if (!new RegExp(`<mechanism>${o.mech}</mechanism>`).test(f)) {
      const offered = [...f.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1]).join(' ');
      throw new LoginError(`server does not offer ${o.mech} (offers: ${offered || 'nothing'})`);
    }
    if (o.mech === 'PLAIN') {
      this.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${o.user}\0${o.password}`).toString('base64')}</auth>`);
      const r = await this.wait(/<success[^>]*\/>|<success[^>]*>[^<]*<\/success>|<failure[\s\S]*?<\/failure>|<failure[^>]*\/>/);
      if (r[0].startsWith('<failure')) throw new LoginError(`login of ${o.user} failed: ${r[0]}`);
    } else {
      await this.scramSha1(o.user, o.password);
    }
    f = await this.features(o.domain);
    this.write(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${o.resource}</resource></bind></iq>`);
    const b = await this.wait(/<jid>([^<]+)<\/jid>|<iq[^>]*type=['"]error['"][\s\S]*?<\/iq>/);
    if (!b[1]) throw new LoginError(`bind failed: ${b[0]}`);
    this.jid = b[1];
    // Legacy session establishment (RFC 3921) only where the server says it is not optional.
    if (/<session[^>]*xmpp-session['"]\s*(?:\/>|>\s*<\/session>)/.test(f)) {
      this.write(`<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>`);
      await this.waitIq('sess1');
    }
    if (o.rosterGet) {
      this.write(`<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>`);
      const r = await this.waitIq('roster1');
      if (/type=['"]error['"]/.test(r)) throw new LoginError(`roster get failed: ${r}`);
    }
    if (o.presence) this.write('<presence/>');
  }

  /** Waits for the start tag of the iq with this id (result or error) and returns it. */
  async waitIq(id: string): Promise<string> {
    const m = await this.wait(new RegExp(`<iq\\b[^>]*\\bid=${q}${id}${q}[^>]*>`));
    return m[0];
  }

  private async scramSha1(user: string, password: string): Promise<void> {
    const nonce = randomBytes(18).toString('base64');
    const first = `n=${user},r=${nonce}`;
    this.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${Buffer.from(`n,,${first}`).toString('base64')}</auth>`);
    const c = await this.wait(/<challenge[^>]*>([^<]*)<\/challenge>|<failure[\s\S]*?<\/failure>|<failure[^>]*\/>/);
    if (c[1] === undefined) throw new LoginError(`SCRAM of ${user} failed: ${c[0]}`);
    const serverFirst = Buffer.from(c[1], 'base64').toString();
    const attrs = new Map(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)] as const));
    const r = attrs.get('r') ?? '';
    const s = attrs.get('s') ?? '';
    const i = Number(attrs.get('i'));
    if (!r.startsWith(nonce) || !s || !(i > 0)) throw new LoginError(`bad SCRAM challenge: ${serverFirst}`);
    const salted = await new Promise<Buffer>((res, rej) => pbkdf2(password, Buffer.from(s, 'base64'), i, 20, 'sha1', (e, k) => (e ? rej(e) : res(k))));
    const clientKey = createHmac('sha1', salted).update('Client Key').digest();
    const storedKey = createHash('sha1').update(clientKey).digest();
    const withoutProof = `c=biws,r=${r}`;
    const authMessage = `${first},${serverFirst},${withoutProof}`;
    const sig = createHmac('sha1', storedKey).update(authMessage).digest();
    for (let k = 0; k < clientKey.length; k++) clientKey[k] = (clientKey[k] as number) ^ (sig[k] as number);
    this.write(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(`${withoutProof},p=${clientKey.toString('base64')}`).toString('base64')}</response>`);
    const ok = await this.wait(/<success[^>]*\/>|<success[^>]*>([^<]*)<\/success>|<failure[\s\S]*?<\/failure>|<failure[^>]*\/>/);
    if (ok[0].startsWith('<failure')) throw new LoginError(`SCRAM of ${user} failed: ${ok[0]}`);
    const serverKey = createHmac('sha1', salted).update('Server Key').digest();
    const expected = createHmac('sha1', serverKey).update(authMessage).digest('base64');
    const v = Buffer.from(ok[1] ?? '', 'base64').toString();
    if (v !== `v=${expected}`) throw new LoginError(`SCRAM server signature mismatch for ${user}: ${v}`);
  }

  /** XEP-0045 join; resolves true if the join created the room (status 201). */
  async joinRoom(roomJid: string, nick: string): Promise<boolean> {
    this.write(`<presence to='${roomJid}/${nick}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
    // The self-presence (status 110) comes after the other occupants' presences; or an error.
    const m = await this.wait(
      /<presence\b[^>]*type=['"]error['"][\s\S]*?<\/presence>|<presence\b(?:(?!<\/presence>)[\s\S])*?code=['"]110['"](?:(?!<\/presence>)[\s\S])*<\/presence>/,
    );
    if (/^<presence\b[^>]*type=['"]error['"]/.test(m[0])) throw new LoginError(`join of ${roomJid} failed: ${m[0].slice(0, 400)}`);
    return /code=['"]201['"]/.test(m[0]);
  }

  /** Accepts the default configuration of a room this client created (an "instant room"). */
  async unlockRoom(roomJid: string): Promise<void> {
    this.write(
      `<iq type='set' id='cfg1' to='${roomJid}'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`,
    );
    const r = await this.waitIq('cfg1');
    if (/type=['"]error['"]/.test(r)) throw new LoginError(`configuring ${roomJid} failed: ${r}`);
  }

  /** disco#info of an entity: its features, or the error condition. */
  async discoInfo(to: string, timeoutMs = 5000): Promise<{ features: string[]; error?: string }> {
    this.write(`<iq type='get' id='disco1' to='${to}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
    let timer: NodeJS.Timeout | undefined;
    const m = await Promise.race([
      this.wait(/<iq\b[^>]*\bid=['"]disco1['"][^>]*\/>|<iq\b[^>]*\bid=['"]disco1['"][\s\S]*?<\/iq>/),
      new Promise<null>((r) => {
        timer = setTimeout(() => r(null), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!m) return { features: [], error: 'no answer' };
    if (/^<iq\b[^>]*type=['"]error['"]/.test(m[0])) {
      const cond = /<([a-z-]+) xmlns=['"]urn:ietf:params:xml:ns:xmpp-stanzas['"]/.exec(m[0])?.[1] ?? 'error';
      return { features: [], error: cond };
    }
    return { features: [...m[0].matchAll(/<feature var=['"]([^'"]+)['"]/g)].map((f) => f[1] as string) };
  }

  /** Ends the stream and closes; resolves when the socket is closed (destroyed after `ms`). */
  close(ms = 2000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.sock.destroy();
        resolve();
      }, ms);
      this.sock.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.sock.end('</stream:stream>');
    });
  }

  destroy(): void {
    this.sock.destroy();
  }
}
