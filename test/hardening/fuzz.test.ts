// HARDENING.md: "nothing they can send crashes the server". A bounded, deterministic fuzz run
// against an in-process server: hundreds of raw connections send mutated copies of valid session
// transcripts (stream header, PLAIN, restart, bind, presence, messages, roster, disco, vCard,
// private storage, blocking, registration, subscriptions ...) and random stanzas from a small
// grammar after a valid login, split into random chunks (also inside UTF-8 sequences).
//
// After every batch: the server answers a logged-in watchdog's ping promptly, every fuzz
// connection is gone from the server's accounting, nothing was thrown asynchronously in this
// process (the server runs in it), and the server logged no error (no 'hook handler failed',
// 'stanza handling failed', 'iq handler failed' ...): an internal error is a server bug.
//
// Deterministic: all input comes from a seeded PRNG, and each connection has its own generator, so
// timing never changes what is sent. For longer local runs: PARLEY_FUZZ_SEED=<n> (another seed),
// PARLEY_FUZZ_CONNECTIONS=<n> (more connections; raise --testTimeout), PARLEY_FUZZ_VERBOSE=1
// (prints what the server answered, by kind). Fuzz connections come from distinct 127.x.y.z
// addresses so that per-address login throttling does not slow the run down.
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/core/logger.js';
import { NS } from '../../src/xmpp/ns.js';
import { RawClient, assertServing, plainAuth, streamHeader, waitUntil } from '../helpers/raw.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const SEED = Number(process.env.PARLEY_FUZZ_SEED ?? 0x9a71e7);
const CONNECTIONS = Number(process.env.PARLEY_FUZZ_CONNECTIONS ?? 300);
const BATCH = 20;
const FUZZ_USERS = 16;
const MAX_STANZA_BYTES = 65_536;

// ---- seeded PRNG ------------------------------------------------------------------------------

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  /** mulberry32: [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)] as T;
  }
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [a[i], a[j]] = [a[j] as T, a[i] as T];
    }
    return a;
  }
}

// ---- vocabulary -------------------------------------------------------------------------------

const NAMESPACES = [
  ...Object.values(NS),
  'jabber:x:data',
  'storage:bookmarks',
  'exodus:prefs',
  'urn:xmpp:carbons:2',
  'urn:xmpp:sm:3',
  'urn:xmpp:mam:2',
  'http://jabber.org/protocol/chatstates',
  'urn:example:fuzz',
  '',
  'jabber:iq:auth',
];
const ELEMENT_NAMES = [
  'query', 'item', 'group', 'block', 'unblock', 'blocklist', 'vCard', 'FN', 'NICKNAME', 'PHOTO', 'BINVAL', 'TYPE',
  'ping', 'time', 'bind', 'resource', 'session', 'optional', 'body', 'subject', 'thread', 'x', 'field', 'value',
  'error', 'delay', 'stanza-id', 'occupant-id', 'remove', 'username', 'password', 'email', 'registered', 'c',
  'show', 'status', 'priority', 'identity', 'feature', 'storage', 'conference', 'enable', 'r', 'a', 'active',
  'exodus', 'defaultnick', 'instructions', 'required', 'service-unavailable', 'text', 'x-fuzz', 'Ω', 'a.b-c_d',
];
const ATTR_NAMES = [
  'jid', 'name', 'subscription', 'ask', 'approved', 'node', 'ver', 'type', 'id', 'to', 'from', 'var', 'action',
  'order', 'value', 'stamp', 'by', 'xml:lang', 'category', 'hash', 'mechanism', 'label', 'seconds', 'code',
];
const TYPES = [
  'get', 'set', 'result', 'error', 'chat', 'groupchat', 'headline', 'normal', 'subscribe', 'subscribed',
  'unsubscribe', 'unsubscribed', 'probe', 'unavailable', 'invisible', '', 'GET', 'submit', 'cancel', 'form',
];
const UNICODE = ['é', 'ß', 'İ', 'ﬀ', 'Ⅸ', '𝄞', '😀', '\u0301', '\u202e', '\ufeff', '\u00a0', '\u2028', '\u3000', 'Ǆ', 'ＡＢ', '\u200b'];
const CONTROL = ['\u0000', '\u0001', '\u0008', '\u000b', '\u001b', '\u007f', '\ufffe', '\uffff', '\ud800'];
const ENTITIES = ['&amp;', '&lt;', '&gt;', '&quot;', '&apos;', '&#0;', '&#x1F600;', '&#xD800;', '&#1114112;', '&bogus;', '&', '&#', '&#x;', '&#65;'];

const DOMAIN = 'localhost';
const user = (n: number) => `fz${n}`;
const pass = (n: number) => `fuzz-pass-${n}`;

interface Ctx {
  r: Rng;
  me: number;
  /** JIDs fuzz stanzas are addressed to. */
  jids: string[];
  /** Values may be huge, hold characters XML forbids, or be unescaped (the stream usually dies). */
  hostile: boolean;
}

function jidPool(me: number, r: Rng): string[] {
  const peer = user((me + 1 + r.int(FUZZ_USERS - 1)) % FUZZ_USERS);
  return [
    DOMAIN, `${user(me)}@${DOMAIN}`, `${user(me)}@${DOMAIN}/fuzz`, `${peer}@${DOMAIN}`, `${peer}@${DOMAIN}/fuzz`,
    `watchdog@${DOMAIN}`, `nobody@${DOMAIN}`, `${DOMAIN}/res`, 'remote.example', `x@remote.example/r`,
    `${peer.toUpperCase()}@LOCALHOST`, `${DOMAIN}.`,
  ];
}

function randomValue(c: Ctx): string {
  const r = c.r;
  switch (r.int(12)) {
    case 0:
      return r.pick(c.jids);
    case 1:
      return r.pick(NAMESPACES);
    case 2:
      return r.pick(TYPES);
    case 3: {
      if (!c.hostile) return r.pick(['A', 'é', '😀', ' ']).repeat(r.range(50, 1000));
      // Huge: around and past the stanza limit.
      const n = r.chance(0.5) ? r.range(1000, 5000) : r.range(MAX_STANZA_BYTES - 2000, MAX_STANZA_BYTES + 4000);
      return r.pick(['A', 'é', '😀', ' ']).repeat(Math.ceil(n / 2));
    }
    case 4:
      return Array.from({ length: r.range(1, 6) }, () => r.pick(UNICODE)).join('');
    case 5:
      return c.hostile ? `x${r.pick(CONTROL)}y` : `x${r.pick(UNICODE)}y`;
    case 6:
      return r.pick(ENTITIES);
    case 7:
      return r.pick(['-1', '0', '1', '99999999999999999999', 'NaN', '1e308', '2002-09-10T23:08:25Z', 'not-a-date', '12:00']);
    case 8:
      return r.pick([
        'a@b@c', `@${DOMAIN}`, `${DOMAIN}/`, '/res', `u@${DOMAIN}/${'r'.repeat(1100)}`, `${'x'.repeat(1100)}@${DOMAIN}`,
        '[::1]', 'u@[::1]', 'u@127.0.0.1', c.hostile ? `u\u0000@${DOMAIN}` : `u\u0009@${DOMAIN}`, `u @${DOMAIN}`, `"u"@${DOMAIN}`, `u@${DOMAIN}/é\u0301`,
        `ﬀ@${DOMAIN}`, `u@xn--nxasmq6b`, `u@${'d'.repeat(300)}`,
      ]);
    case 9:
      return `'"<>/=`.slice(r.int(6));
    case 10:
      return '';
    default:
      return `v${r.int(1000)}`;
  }
}

function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** Escaped (so the stanza parses and reaches the handlers), in hostile mode sometimes raw. */
function attrValue(c: Ctx): string {
  const v = randomValue(c);
  return c.hostile && c.r.chance(0.3) ? v : escapeXml(v);
}

function attrs(c: Ctx, names: readonly string[], n: number, used = new Set<string>()): string {
  let out = '';
  for (let i = 0; i < n; i++) {
    const name = c.r.pick(names);
    if (used.has(name) && !(c.hostile && c.r.chance(0.3))) continue; // hostile: duplicate attributes
    used.add(name);
    out += ` ${name}='${attrValue(c)}'`;
  }
  return out;
}

// ---- the grammar: random elements and stanzas ----------------------------------------------------

function randomElement(c: Ctx, depth: number, name = c.r.pick(ELEMENT_NAMES), ns?: string): string {
  const r = c.r;
  const xmlns = ns !== undefined ? ` xmlns='${escapeXml(ns)}'` : r.chance(0.3) ? ` xmlns='${escapeXml(r.pick(NAMESPACES))}'` : '';
  const a = attrs(c, ATTR_NAMES, r.int(4));
  if (depth <= 0 || r.chance(0.3)) return r.chance(0.5) ? `<${name}${xmlns}${a}/>` : `<${name}${xmlns}${a}>${textContent(c)}</${name}>`;
  let inner = '';
  const n = r.int(4);
  for (let i = 0; i < n; i++) inner += r.chance(0.2) ? textContent(c) : randomElement(c, depth - 1);
  return `<${name}${xmlns}${a}>${inner}</${name}>`;
}

function textContent(c: Ctx): string {
  const v = randomValue(c);
  return c.hostile && c.r.chance(0.3) ? v : escapeXml(v);
}

/** iq payloads the server has handlers for (name, namespace). */
const PAYLOADS: [string, string][] = [
  ['query', NS.ROSTER], ['query', NS.DISCO_INFO], ['query', NS.DISCO_ITEMS], ['query', NS.PRIVATE], ['query', NS.REGISTER],
  ['query', NS.VERSION], ['query', NS.LAST], ['vCard', NS.VCARD], ['block', NS.BLOCKING], ['unblock', NS.BLOCKING],
  ['blocklist', NS.BLOCKING], ['ping', NS.PING], ['time', NS.TIME], ['bind', NS.BIND], ['session', NS.SESSION],
];

function randomStanza(c: Ctx): string {
  const r = c.r;
  const roll = r.next();
  const name = roll < 0.5 ? 'iq' : roll < 0.72 ? 'message' : roll < 0.98 ? 'presence' : r.pick(['stream:error', 'r', 'enable', 'a', 'foo', 'iq']);
  let head = '';
  const used = new Set(['type', 'to', 'id', 'from']);
  if (r.chance(0.9)) head += ` type='${escapeXml(r.chance(0.85) ? r.pick(name === 'iq' ? ['get', 'set', 'get', 'set', 'result', 'error'] : name === 'message' ? ['chat', 'normal', 'headline', 'groupchat', 'error'] : ['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed', 'probe', 'unavailable', 'error']) : r.pick(TYPES))}'`;
  if (r.chance(0.8)) head += ` to='${escapeXml(r.pick(c.jids))}'`;
  if (r.chance(0.9)) head += ` id='${escapeXml(r.chance(0.9) ? `g${r.int(1e6)}` : randomValue(c))}'`;
  if (r.chance(0.1)) head += ` from='${r.chance(0.7) ? escapeXml(r.pick(c.jids.slice(1, 3))) : attrValue(c)}'`;
  head += attrs(c, ATTR_NAMES, r.chance(0.2) ? r.int(3) : 0, used);
  let inner = '';
  if (name === 'iq') {
    const payloads = r.chance(0.85) ? 1 : r.pick([0, 2]);
    for (let i = 0; i < payloads; i++) {
      const [pn, pns] = r.chance(0.9) ? r.pick(PAYLOADS) : [r.pick(ELEMENT_NAMES), r.pick(NAMESPACES)];
      inner += payloadFor(c, pn, pns);
    }
  } else {
    const n = r.int(4);
    for (let i = 0; i < n; i++) inner += r.chance(0.4) ? `<body>${textContent(c)}</body>` : randomElement(c, r.int(4));
  }
  return inner || r.chance(0.5) ? `<${name}${head}>${inner}</${name}>` : `<${name}${head}/>`;
}

/** A plausible payload for a known handler, with random details. */
function payloadFor(c: Ctx, name: string, ns: string): string {
  const r = c.r;
  const item = () => `<item${attrs(c, ['jid', 'name', 'subscription', 'ask', 'approved', 'node', 'action', 'value', 'order'], r.range(1, 4))}>${r.chance(0.4) ? `<group>${textContent(c)}</group>` : ''}${r.chance(0.2) ? randomElement(c, 2) : ''}</item>`;
  const nodeAttr = r.chance(0.3) ? ` node='${attrValue(c)}'` : '';
  const verAttr = r.chance(0.3) ? ` ver='${attrValue(c)}'` : '';
  let inner = '';
  if (ns === NS.ROSTER || ns === NS.BLOCKING || ns === NS.DISCO_ITEMS) {
    const n = r.int(4);
    for (let i = 0; i < n; i++) inner += item();
  } else if (ns === NS.PRIVATE) {
    inner = r.chance(0.8) ? randomElement(c, 3, r.pick(['exodus', 'storage', 'x', 'query', 'prefs']), r.pick(NAMESPACES)) : '';
  } else if (ns === NS.REGISTER) {
    const parts = [
      `<username>${textContent(c)}</username>`, `<password>${textContent(c)}</password>`, '<remove/>', `<email>${textContent(c)}</email>`,
      `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field><field var='username'><value>${textContent(c)}</value></field><field var='password'><value>${textContent(c)}</value></field></x>`,
    ];
    // <remove/> would cancel the fuzz account: keep it rare.
    for (const p of r.shuffle(parts).slice(0, r.int(3))) if (p !== '<remove/>' || r.chance(0.1)) inner += p;
  } else if (ns === NS.VCARD) {
    const n = r.int(4);
    for (let i = 0; i < n; i++) inner += r.chance(0.5) ? `<${r.pick(['FN', 'NICKNAME', 'URL', 'DESC'])}>${textContent(c)}</${r.pick(['FN', 'NICKNAME', 'URL', 'DESC'])}>` : `<PHOTO><TYPE>image/png</TYPE><BINVAL>${r.chance(0.5) ? 'iVBORw0KGgo=' : textContent(c)}</BINVAL></PHOTO>`;
  } else if (ns === NS.BIND) {
    inner = r.chance(0.7) ? `<resource>${textContent(c)}</resource>` : '';
  } else {
    if (r.chance(0.3)) inner = randomElement(c, 2);
  }
  if (r.chance(0.1)) inner += randomElement(c, 3);
  return `<${name} xmlns='${escapeXml(ns)}'${nodeAttr}${verAttr}>${inner}</${name}>`;
}

// ---- the corpus: valid session transcripts ---------------------------------------------------------

/** One write of a transcript; `gate`: what the server answers before the next step is sent. */
interface Segment {
  data: Buffer;
  gate?: RegExp;
  /** Part of the login (header, auth, restart, bind). */
  login?: boolean;
  /** Changed by a mutation: the gate may never match, so it is not waited for long. */
  mutated?: boolean;
}

const FEATURES = /<stream:features\b[^>]*(?:\/>|>[\s\S]*?<\/stream:features>)/;
const SASL_RESULT = /<success\b|<failure\b|<challenge\b/;
const IQ_END = /<\/iq>|<iq\b[^>]*\/>/;

function seg(data: string, gate?: RegExp, login = false): Segment {
  return { data: Buffer.from(data, 'utf8'), gate, login };
}

function loginSegments(me: number, resource: string): Segment[] {
  return [
    seg(streamHeader(DOMAIN), FEATURES, true),
    seg(plainAuth(user(me), pass(me)), SASL_RESULT, true),
    seg(streamHeader(DOMAIN, { xmlDecl: false }), FEATURES, true),
    seg(`<iq type='set' id='bind1'><bind xmlns='${NS.BIND}'><resource>${resource}</resource></bind></iq>`, IQ_END, true),
  ];
}

/** A full, valid session of an ordinary client (in random order after the login). */
function sessionTranscript(c: Ctx): Segment[] {
  const r = c.r;
  const me = `${user(c.me)}@${DOMAIN}`;
  const peer = c.jids[3] as string;
  const id = () => `t${r.int(1e6)}`;
  const stanzas = [
    `<iq type='set' id='${id()}'><session xmlns='${NS.SESSION}'/></iq>`,
    `<iq type='get' id='${id()}'><query xmlns='${NS.ROSTER}'${r.chance(0.5) ? " ver=''" : ''}/></iq>`,
    `<presence><show>away</show><status>fuzzing é😀</status><priority>${r.range(-5, 5)}</priority><c xmlns='${NS.CAPS}' hash='sha-1' node='https://fuzz.example' ver='abc='/></presence>`,
    `<message to='${peer}' type='chat' id='${id()}'><body>hello 👋 &amp; &lt;b&gt;</body><thread>th1</thread><active xmlns='http://jabber.org/protocol/chatstates'/></message>`,
    `<message to='${peer}/fuzz' type='normal' id='${id()}'><subject>s</subject><body>to a resource</body></message>`,
    `<message to='watchdog@${DOMAIN}' type='headline'><body>headline</body></message>`,
    `<message to='nobody@${DOMAIN}' type='chat'><body>offline?</body></message>`,
    `<message to='${me}' type='chat' id='${id()}'><body>self</body><delay xmlns='${NS.DELAY}' from='${DOMAIN}' stamp='2002-09-10T23:08:25Z'/><stanza-id xmlns='${NS.STANZA_ID}' by='${me}' id='forged'/></message>`,
    `<iq type='set' id='${id()}'><query xmlns='${NS.ROSTER}'><item jid='${peer}' name='Peer é'><group>Friends</group><group>Work</group></item></query></iq>`,
    `<presence to='${peer}' type='subscribe'/>`,
    `<presence to='${peer}' type='subscribed'/>`,
    `<presence to='${peer}' type='unsubscribe'/>`,
    `<presence to='${peer}' type='unsubscribed'/>`,
    `<presence to='${peer}' type='probe'/>`,
    `<presence to='${peer}/fuzz'><status>directed</status></presence>`,
    `<iq type='set' id='${id()}'><query xmlns='${NS.ROSTER}'><item jid='${peer}' subscription='remove'/></query></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><query xmlns='${NS.DISCO_INFO}'/></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><query xmlns='${NS.DISCO_ITEMS}'/></iq>`,
    `<iq type='get' to='${me}' id='${id()}'><query xmlns='${NS.DISCO_INFO}'/></iq>`,
    `<iq type='get' to='${peer}' id='${id()}'><query xmlns='${NS.DISCO_INFO}' node='https://parley.im/caps#x'/></iq>`,
    `<iq type='get' id='${id()}'><vCard xmlns='${NS.VCARD}'/></iq>`,
    `<iq type='set' id='${id()}'><vCard xmlns='${NS.VCARD}'><FN>Fuzz ${c.me}</FN><NICKNAME>fz</NICKNAME><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard></iq>`,
    `<iq type='get' to='${peer}' id='${id()}'><vCard xmlns='${NS.VCARD}'/></iq>`,
    `<iq type='set' id='${id()}'><query xmlns='${NS.PRIVATE}'><exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus></query></iq>`,
    `<iq type='get' id='${id()}'><query xmlns='${NS.PRIVATE}'><exodus xmlns='exodus:prefs'/></query></iq>`,
    `<iq type='get' id='${id()}'><query xmlns='${NS.PRIVATE}'><storage xmlns='storage:bookmarks'/></query></iq>`,
    `<iq type='get' id='${id()}'><blocklist xmlns='${NS.BLOCKING}'/></iq>`,
    `<iq type='set' id='${id()}'><block xmlns='${NS.BLOCKING}'><item jid='spam@remote.example'/><item jid='${peer}/fuzz'/></block></iq>`,
    `<iq type='set' id='${id()}'><unblock xmlns='${NS.BLOCKING}'><item jid='${peer}/fuzz'/></unblock></iq>`,
    `<iq type='set' id='${id()}'><unblock xmlns='${NS.BLOCKING}'/></iq>`,
    `<iq type='get' id='${id()}'><query xmlns='${NS.REGISTER}'/></iq>`,
    `<iq type='set' id='${id()}'><query xmlns='${NS.REGISTER}'><username>${user(c.me)}</username><password>${pass(c.me)}</password></query></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><ping xmlns='${NS.PING}'/></iq>`,
    `<iq type='get' to='${peer}/fuzz' id='${id()}'><ping xmlns='${NS.PING}'/></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><query xmlns='${NS.VERSION}'/></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><time xmlns='${NS.TIME}'/></iq>`,
    `<iq type='get' to='${peer}' id='${id()}'><query xmlns='${NS.LAST}'/></iq>`,
    `<iq type='get' to='${DOMAIN}' id='${id()}'><query xmlns='${NS.LAST}'/></iq>`,
    `<iq type='result' id='stray-${id()}'/>`,
    `<iq type='error' to='${peer}/fuzz' id='${id()}'><error type='cancel'><item-not-found xmlns='${NS.STANZAS}'/></error></iq>`,
    `<r xmlns='urn:xmpp:sm:3'/>`,
    ' \n',
  ];
  const chosen = r.shuffle(stanzas).slice(0, r.range(6, 16));
  if (r.chance(0.5)) chosen.unshift(stanzas.find((s) => s.startsWith('<presence><show>')) as string);
  if (r.chance(0.3)) chosen.push("<presence type='unavailable'/>");
  const out = [...loginSegments(c.me, 'fuzz'), ...chosen.map((s) => seg(s))];
  if (r.chance(0.7)) out.push(seg('</stream:stream>'));
  return out;
}

/** Before authentication: in-band registration, SCRAM steps, STARTTLS with garbage after it. */
function preauthTranscript(c: Ctx): Segment[] {
  const r = c.r;
  const header = seg(streamHeader(DOMAIN), FEATURES, true);
  switch (r.int(3)) {
    case 0: {
      const name = `reg${r.int(1e9)}`;
      return [
        header,
        seg(`<iq type='get' id='reg1'><query xmlns='${NS.REGISTER}'/></iq>`, IQ_END),
        r.chance(0.5)
          ? seg(`<iq type='set' id='reg2'><query xmlns='${NS.REGISTER}'><username>${name}</username><password>pw-${name}</password></query></iq>`, IQ_END)
          : seg(
              `<iq type='set' id='reg2' to='${DOMAIN}'><query xmlns='${NS.REGISTER}'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field><field var='username'><value>${name}</value></field><field var='password'><value>pw-${name}</value></field></x></query></iq>`,
              IQ_END,
            ),
        seg(plainAuth(name, `pw-${name}`), SASL_RESULT),
        seg(streamHeader(DOMAIN, { xmlDecl: false }), FEATURES),
        seg(`<iq type='set' id='bind1'><bind xmlns='${NS.BIND}'/></iq>`, IQ_END),
        seg(`<iq type='set' id='rm'><query xmlns='${NS.REGISTER}'><remove/></query></iq>`, IQ_END),
      ];
    }
    case 1: {
      const nonce = `n${r.int(1e9)}`;
      const first = Buffer.from(`n,,n=${user(c.me)},r=${nonce}`).toString('base64');
      const final = Buffer.from(`c=biws,r=${nonce}srv,p=${Buffer.from('bogus-proof-bogus-proof!').toString('base64')}`).toString('base64');
      return [
        header,
        seg(`<auth xmlns='${NS.SASL}' mechanism='${r.pick(['SCRAM-SHA-1', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'PLAIN', 'X-OAUTH2'])}'>${first}</auth>`, SASL_RESULT),
        seg(`<response xmlns='${NS.SASL}'>${final}</response>`, SASL_RESULT),
        seg(`<abort xmlns='${NS.SASL}'/>`, SASL_RESULT),
        seg(plainAuth(user(c.me), pass(c.me), r.chance(0.3) ? `${user(c.me)}@${DOMAIN}` : ''), SASL_RESULT),
        seg(streamHeader(DOMAIN, { xmlDecl: false }), FEATURES),
      ];
    }
    default:
      return [header, seg(`<starttls xmlns='${NS.TLS}'/>`, /<proceed\b|<failure\b/), seg('\u0016\u0003\u0001\u0000\u00a5\u0001 not really a ClientHello <stream:stream>')];
  }
}

// ---- mutations -----------------------------------------------------------------------------------

const INTERESTING_BYTES = [0x3c, 0x3e, 0x2f, 0x27, 0x22, 0x26, 0x3d, 0x00, 0xff, 0xc3, 0xe2, 0xf0, 0x80, 0x0a, 0x20, 0x3a, 0x3f, 0x21];

function mutate(c: Ctx, b: Buffer): Buffer {
  const r = c.r;
  if (b.length === 0) return Buffer.from(randomElement(c, 2));
  const pos = () => r.int(b.length + 1);
  switch (r.int(10)) {
    case 0: {
      // bit flips
      const out = Buffer.from(b);
      for (let i = r.range(1, 3); i > 0; i--) {
        const p = r.int(out.length);
        out[p] = (out[p] as number) ^ (1 << r.int(8));
      }
      return out;
    }
    case 1: {
      // byte insertion
      const p = pos();
      const ins = Buffer.from(Array.from({ length: r.range(1, 4) }, () => (r.chance(0.7) ? r.pick(INTERESTING_BYTES) : r.int(256))));
      return Buffer.concat([b.subarray(0, p), ins, b.subarray(p)]);
    }
    case 2: {
      // span deletion
      const p = r.int(b.length);
      return Buffer.concat([b.subarray(0, p), b.subarray(Math.min(b.length, p + r.range(1, 16)))]);
    }
    case 3: {
      // duplicated span (often a whole element or tag)
      const p = r.int(b.length);
      const q = Math.min(b.length, p + r.range(1, 200));
      const at = pos();
      const span = b.subarray(p, q);
      const times = r.chance(0.1) ? r.range(2, 50) : 1;
      return Buffer.concat([b.subarray(0, at), ...Array.from({ length: times }, () => span), b.subarray(at)]);
    }
    case 4:
      // truncation
      return b.subarray(0, r.int(b.length));
    case 5: {
      // swapped tag names (opening or closing tags; mismatches included)
      const s = b.toString('utf8');
      const tags = [...s.matchAll(/<\/?([A-Za-z][\w:.-]*)/g)];
      if (!tags.length) return b;
      const t = r.pick(tags);
      const start = (t.index as number) + t[0].length - (t[1] as string).length;
      const other = r.chance(0.5) ? (r.pick(tags)[1] as string) : r.pick([...ELEMENT_NAMES, 'stream:stream', 'stream:features', 'foo:bar', 'xml', 'xmlns:x']);
      return Buffer.from(s.slice(0, start) + other + s.slice(start + (t[1] as string).length), 'utf8');
    }
    case 6: {
      // a random attribute value (huge, unicode, control characters, entities, quotes ...)
      const s = b.toString('utf8');
      const vals = [...s.matchAll(/=(['"])([^'"]*)\1/g)];
      if (!vals.length) return b;
      const v = r.pick(vals);
      const start = (v.index as number) + 2;
      const nv = r.chance(0.6) ? escapeXml(randomValue(c)) : randomValue(c);
      return Buffer.from(s.slice(0, start) + nv + s.slice(start + (v[2] as string).length), 'utf8');
    }
    case 7: {
      // a random element inserted at a tag boundary
      const s = b.toString('utf8');
      const bounds = [...s.matchAll(/>/g)].map((m) => (m.index as number) + 1);
      const at = bounds.length ? r.pick(bounds) : 0;
      return Buffer.from(s.slice(0, at) + (r.chance(0.5) ? randomElement(c, r.int(5)) : randomStanza(c)) + s.slice(at), 'utf8');
    }
    case 8: {
      // a random attribute added to a tag
      const s = b.toString('utf8');
      const opens = [...s.matchAll(/<[A-Za-z][\w:.-]*/g)];
      if (!opens.length) return b;
      const m = r.pick(opens);
      const at = (m.index as number) + m[0].length;
      const name = r.chance(0.8) ? r.pick([...ATTR_NAMES, 'xmlns', 'xmlns:stream', 'xmlns:x', 'version', 'x:y']) : `a${r.int(100)}`;
      const extra = r.chance(0.05) ? Array.from({ length: 80 }, (_, i) => ` a${i}='1'`).join('') : ` ${name}='${attrValue(c)}'`;
      return Buffer.from(s.slice(0, at) + extra + s.slice(at), 'utf8');
    }
    default: {
      // text content replaced
      const s = b.toString('utf8');
      const texts = [...s.matchAll(/>([^<]+)</g)];
      if (!texts.length) return Buffer.from(s + textContent(c), 'utf8');
      const t = r.pick(texts);
      const start = (t.index as number) + 1;
      return Buffer.from(s.slice(0, start) + textContent(c) + s.slice(start + (t[1] as string).length), 'utf8');
    }
  }
}

/** Applies 1-4 mutations to segments (from index `from` on; the login before it stays valid). */
function mutateTranscript(c: Ctx, segs: Segment[], from: number): Segment[] {
  const out = segs.map((s) => ({ ...s }));
  if (out.length <= from) return out;
  for (let i = c.r.range(1, 4); i > 0; i--) {
    const k = c.r.range(from, out.length - 1);
    const s = out[k] as Segment;
    s.data = mutate(c, s.data);
    s.mutated = true;
    if (c.r.chance(0.15)) out.length = k + 1; // truncated: the rest of the session never comes
  }
  return out;
}

type Mode = 'mutate-all' | 'mutate-post' | 'grammar' | 'preauth';

function buildCase(index: number): { mode: Mode; segs: Segment[]; r: Rng } {
  const r = new Rng((SEED ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const me = index % FUZZ_USERS;
  const c: Ctx = { r, me, jids: jidPool(me, r), hostile: true };
  const roll = r.next();
  let mode: Mode;
  let segs: Segment[];
  if (roll < 0.25) {
    mode = 'mutate-all';
    segs = mutateTranscript(c, sessionTranscript(c), 0);
  } else if (roll < 0.6) {
    mode = 'mutate-post';
    segs = mutateTranscript(c, sessionTranscript(c), 4);
  } else if (roll < 0.9) {
    mode = 'grammar';
    segs = [...loginSegments(me, 'fuzz'), ...(r.chance(0.5) ? [seg('<presence/>')] : [])];
    for (let i = r.range(5, 20); i > 0; i--) {
      // Mostly well-formed stanzas that reach the handlers; a few hostile or mutated ones.
      c.hostile = r.chance(0.02);
      const s = seg(randomStanza(c));
      if (r.chance(0.02)) {
        s.data = mutate(c, s.data);
        s.mutated = true;
      }
      segs.push(s);
    }
    c.hostile = true;
  } else {
    mode = 'preauth';
    segs = mutateTranscript(c, preauthTranscript(c), r.chance(0.2) ? 0 : 1);
  }
  return { mode, segs, r };
}

// ---- a raw fuzz connection --------------------------------------------------------------------------

class FuzzConn {
  text = '';
  closed = false;
  sent = 0;
  private readonly decoder = new TextDecoder('utf-8');
  private waiters = new Set<() => void>();

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.text += this.decoder.decode(d, { stream: true });
      this.notify();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  static open(port: number, localAddress: string): Promise<FuzzConn> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port, localAddress });
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        sock.setNoDelay(true);
        resolve(new FuzzConn(sock));
      });
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  write(b: Buffer): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed || this.sock.destroyed || !this.sock.writable) return resolve();
      this.sent += b.length;
      this.sock.write(b, () => resolve());
    });
  }

  /** Resolves true when `re` matches the text received after `since`, false on close or timeout. */
  waitFor(re: RegExp, since: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (re.test(this.text.slice(since))) return done(true);
        if (this.closed) return done(false);
      };
      const done = (v: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(v);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  waitClosed(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.closed) return resolve(true);
      const check = () => {
        if (!this.closed) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        resolve(false);
      }, timeoutMs);
      this.waiters.add(check);
    });
  }
}

const tick = (ms: number) => new Promise<void>((r) => (ms ? setTimeout(r, ms) : setImmediate(r)));

/** Sends one case: each segment in random chunks (cut anywhere, also inside UTF-8 sequences). */
async function runCase(port: number, index: number): Promise<{ index: number; mode: Mode; sent: number; received: string }> {
  const { mode, segs, r } = buildCase(index);
  const local = `127.${10 + Math.floor(index / 64000)}.${Math.floor(index / 250) % 256}.${(index % 250) + 2}`;
  const conn = await FuzzConn.open(port, local);
  try {
    for (const s of segs) {
      if (conn.closed) break;
      const since = conn.text.length;
      let off = 0;
      const pieces = r.chance(0.5) ? 1 : r.range(2, 12);
      for (let p = 1; p <= pieces && off < s.data.length; p++) {
        const end = p === pieces ? s.data.length : Math.min(s.data.length, off + 1 + r.int(Math.max(1, Math.ceil((s.data.length - off) / 2))));
        await conn.write(s.data.subarray(off, end));
        off = end;
        if (r.chance(0.3)) await tick(r.int(3));
      }
      // An intact step is answered at once (generous timeout for a loaded machine); a mutated one
      // may leave the server waiting for more input.
      if (s.gate) await conn.waitFor(s.gate, since, s.mutated ? 250 : 2000);
    }
    // End: a polite close, a half-close, an abrupt reset, or just going quiet for a moment.
    switch (r.int(4)) {
      case 0:
        await conn.write(Buffer.from('</stream:stream>'));
        await conn.waitClosed(300);
        break;
      case 1:
        conn.sock.end();
        await conn.waitClosed(300);
        break;
      case 2:
        conn.sock.resetAndDestroy();
        break;
      default:
        await conn.waitClosed(r.int(150));
    }
  } finally {
    conn.sock.destroy();
  }
  return { index, mode, sent: conn.sent, received: conn.text };
}

// ---- the test ----------------------------------------------------------------------------------------

interface LogRecord {
  level: number;
  msg?: string;
  [k: string]: unknown;
}

describe('hardening: fuzzed client input never breaks the server', () => {
  let srv: TestServer;
  let port: number;
  let watchdog: RawClient;
  let buddy: RawClient;
  /** With PARLEY_TEST_MUX, clients go through mux processes: none may die (they would be restarted). */
  let muxPids: number[] = [];
  const records: LogRecord[] = [];
  const asyncErrors: string[] = [];
  const onUncaught = (err: unknown) => asyncErrors.push(`uncaughtException: ${(err as Error)?.stack ?? String(err)}`);
  const onUnhandled = (err: unknown) => asyncErrors.push(`unhandledRejection: ${(err as Error)?.stack ?? String(err)}`);

  beforeAll(async () => {
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUnhandled);
    let partial = '';
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        partial += chunk.toString('utf8');
        const lines = partial.split('\n');
        partial = lines.pop() as string;
        for (const line of lines) {
          if (!line) continue;
          try {
            records.push(JSON.parse(line) as LogRecord);
          } catch {
            records.push({ level: 60, msg: `unparsable log line: ${line}` });
          }
        }
        cb();
      },
    });
    srv = await startTestServer(
      {
        hosts: [{ domain: DOMAIN, registration: { enabled: true, minPasswordLength: 4 } }],
        tls: { required: false },
        auth: { allowPlainWithoutTls: true, maxFailuresPerAddress: 1_000_000, maxFailuresPerPair: 1_000_000, banSeconds: 1 },
        limits: {
          negotiationTimeoutMs: 1500,
          maxStanzaBytes: MAX_STANZA_BYTES,
          connectionsPerAddress: 1000,
          preAuthPerAddress: 1000,
        },
      },
      { log: createLogger({ level: 'warn', destination: sink }) },
    );
    port = srv.ports.c2s as number;
    await srv.addUser('watchdog', 'watchdog-pass');
    await srv.addUser('buddy', 'buddy-pass');
    for (let i = 0; i < FUZZ_USERS; i++) await srv.addUser(user(i), pass(i));
    muxPids = srv.muxes?.pids() ?? [];
    watchdog = await RawClient.login(port, 'watchdog', 'watchdog-pass', { resource: 'watch', presence: true });
    buddy = await RawClient.login(port, 'buddy', 'buddy-pass', { resource: 'watch', presence: true });
  }, 60_000);

  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUnhandled);
    watchdog?.destroy();
    buddy?.destroy();
    await srv?.close();
  });

  function serverErrors(): LogRecord[] {
    return records.filter(
      (x) => x.level >= 50 || /hook handler failed|hook folder failed|stanza handling failed|iq handler failed|could not bounce|bounce failed|mux exited/.test(x.msg ?? ''),
    );
  }

  /** Puts back fuzz accounts a fuzzed <remove/> cancelled, and passwords a fuzzed change altered. */
  async function restoreAccounts(): Promise<void> {
    for (let i = 0; i < FUZZ_USERS; i++) {
      const bare = `${user(i)}@${DOMAIN}`;
      if (!(await srv.server.auth.exists(bare))) await srv.addUser(user(i), pass(i));
      else if (!(await srv.server.auth.verifyPassword(user(i), DOMAIN, pass(i)))) await srv.server.auth.setPassword(bare, pass(i));
    }
  }

  it(`survives ${CONNECTIONS} fuzzed connections (seed ${SEED})`, async () => {
    const modes: Record<string, number> = {};
    let sentBytes = 0;
    let streamErrors = 0;
    let bound = 0;
    const replies: Record<string, number> = {};
    const errorTexts: Record<string, number> = {};
    const internalErrors: string[] = [];
    for (let start = 0; start < CONNECTIONS; start += BATCH) {
      const indexes = Array.from({ length: Math.min(BATCH, CONNECTIONS - start) }, (_, k) => start + k);
      const results = await Promise.all(indexes.map((i) => runCase(port, i)));
      for (const res of results) {
        modes[res.mode] = (modes[res.mode] ?? 0) + 1;
        sentBytes += res.sent;
        if (res.received.includes('<stream:error')) {
          streamErrors++;
          const t = /<stream:error>[\s\S]*?<\/stream:error>/.exec(res.received)?.[0].replace(/<[^>]*>/g, ' ').trim().slice(0, 80) ?? '';
          const k = `${res.mode}: ${/<stream:error><([\w-]+)/.exec(res.received)?.[1]} ${t}`;
          errorTexts[k] = (errorTexts[k] ?? 0) + 1;
        }
        if (res.received.includes('<jid>')) bound++;
        if (/<internal-server-error xmlns=["']urn:ietf:params:xml:ns:xmpp-(?:stanzas|streams)/.test(res.received)) internalErrors.push(`connection ${res.index} (${res.mode}): ${res.received.slice(-2000)}`);
        for (const m of res.received.matchAll(/<(iq|message|presence)\b[^>]*\btype=["'](result|error)["']|<stream:error><([\w-]+)|<failure xmlns=["'][^"']+["']><([\w-]+)/g)) {
          const k = m[3] ? `stream:${m[3]}` : m[4] ? `sasl:${m[4]}` : `${m[1]}:${m[2]}`;
          replies[k] = (replies[k] ?? 0) + 1;
        }
      }
      const where = `after connections ${start}..${start + indexes.length - 1} (seed ${SEED}; rerun with PARLEY_FUZZ_SEED=${SEED})`;

      // The server still serves: the watchdog's ping is answered promptly, and a message gets through.
      await watchdog.ping(2000);
      await assertServing(watchdog, buddy, 3000);
      // Every fuzz connection is gone from the accounting (only the two logged-in clients remain).
      await waitUntil(() => srv.server.connectionCount <= 2, 5000, `connectionCount back to 2 (is ${srv.server.connectionCount}) ${where}`);
      expect(srv.server.sessions.size, where).toBeLessThanOrEqual(2);
      expect(asyncErrors, `asynchronous errors in the server process ${where}`).toEqual([]);
      expect(internalErrors, `internal-server-error answers ${where}`).toEqual([]);
      expect(srv.muxes?.pids() ?? [], `mux processes ${where}`).toEqual(muxPids);
      const errs = serverErrors();
      expect(errs, `server logged internal errors ${where}:\n${errs.map((e) => JSON.stringify(e)).join('\n')}`).toEqual([]);
      await restoreAccounts();
    }
    if (process.env.PARLEY_FUZZ_VERBOSE) {
      const levels: Record<string, number> = {};
      for (const x of records) levels[`${x.level} ${x.msg}`] = (levels[`${x.level} ${x.msg}`] ?? 0) + 1;
      console.log(JSON.stringify({ seed: SEED, modes, sentBytes, streamErrors, bound, replies, errorTexts, logs: levels }, null, 1));
    }
    // The fuzzing really reached both the negotiation and bound sessions.
    expect(bound, 'connections that bound a resource').toBeGreaterThan(CONNECTIONS / 4);
    expect(streamErrors, 'connections that got a stream error').toBeGreaterThan(CONNECTIONS / 10);
    expect(Object.keys(modes).sort()).toEqual(['grammar', 'mutate-all', 'mutate-post', 'preauth']);
    expect(sentBytes).toBeGreaterThan(0);
    // A brand-new client can still log in and chat.
    const late = await RawClient.login(port, user(0), pass(0), { resource: 'late', presence: true });
    await assertServing(late, watchdog, 3000);
    late.destroy();
  }, 60_000);
});
