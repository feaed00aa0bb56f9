// File transfer between two real @xmpp/client users through the server, which has no code for it
// beyond routing (and the XEP-0065 proxy): XEP-0047 in-band bytestreams (open/data/close iqs
// arrive unchanged, the bytes arrive intact), and XEP-0234 Jingle file transfer over a XEP-0261
// IBB transport and over a XEP-0260 SOCKS5 transport whose only candidate is the server's proxy
// (session-initiate, session-accept, transport-info, the data, session-terminate).
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, iqError, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';
import { s5bHash, socks5Connect } from '../helpers/socks5.js';

const NS_IBB = 'http://jabber.org/protocol/ibb';
const NS_JINGLE = 'urn:xmpp:jingle:1';
const NS_FT = 'urn:xmpp:jingle:apps:file-transfer:5';
const NS_JIBB = 'urn:xmpp:jingle:transports:ibb:1';
const NS_JS5B = 'urn:xmpp:jingle:transports:s5b:1';
const NS_HASHES = 'urn:xmpp:hashes:2';
const NS_BS = 'http://jabber.org/protocol/bytestreams';

type Callee = { set(ns: string, name: string, h: (ctx: { stanza: Element }) => unknown): void };

/** Incoming iq-sets of one kind, acknowledged with an empty result and kept for the test to read. */
function inbox(c: TestClient, ns: string, name: string): { next(pred?: (el: Element) => boolean): Promise<Element>; all: Element[] } {
  const all: Element[] = [];
  const waiters: { pred: (el: Element) => boolean; resolve: (el: Element) => void }[] = [];
  const taken = new Set<Element>();
  (c.xmpp as unknown as { iqCallee: Callee }).iqCallee.set(ns, name, ({ stanza }) => {
    all.push(stanza);
    const i = waiters.findIndex((w) => w.pred(stanza));
    if (i !== -1) {
      taken.add(stanza);
      waiters.splice(i, 1)[0]?.resolve(stanza);
    }
    return true;
  });
  return {
    all,
    next(pred = () => true) {
      const have = all.find((el) => !taken.has(el) && pred(el));
      if (have) {
        taken.add(have);
        return Promise.resolve(have);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${ns} ${name} arrived`)), 5000);
        waiters.push({ pred, resolve: (el) => (clearTimeout(t), resolve(el)) });
      });
    },
  };
}

function sha256(b: Buffer): Buffer {
  return createHash('sha256').update(b).digest();
}

/** The routed copy is the sent stanza, addressed and stamped by the server, payload untouched. */
function expectRoutedUnchanged(got: Element, sent: Element, from: string): void {
  expect(got.attrs.from).toBe(from);
  expect(got.attrs.id).toBe(sent.attrs.id);
  expect(got.attrs.type).toBe(sent.attrs.type);
  expect(got.getChildElements().map(String)).toEqual(sent.getChildElements().map(String));
}

/** XEP-0047 §2-§4 from `from` to `to`: open, data in blocks (each acknowledged), close. */
async function sendIbb(from: TestClient, to: string, sid: string, file: Buffer, blockSize = 4096): Promise<Element[]> {
  const sent: Element[] = [];
  const send = async (payload: Element) => {
    const iq = xml('iq', { type: 'set', to, id: `ibb-${sid}-${sent.length}` }, payload);
    sent.push(iq);
    const r = await from.iq(iq);
    expect(r.attrs.type).toBe('result');
  };
  await send(xml('open', { xmlns: NS_IBB, sid, 'block-size': String(blockSize), stanza: 'iq' }));
  for (let off = 0, seq = 0; off < file.length; off += blockSize, seq = (seq + 1) % 65536) {
    await send(xml('data', { xmlns: NS_IBB, sid, seq: String(seq) }, file.subarray(off, off + blockSize).toString('base64')));
  }
  await send(xml('close', { xmlns: NS_IBB, sid }));
  return sent;
}

/** Reassembles the data a receiver got for one IBB session, checking the sequence numbers. */
function ibbBytes(received: Element[], sid: string): Buffer {
  const blocks = received.map((iq) => iq.getChild('data', NS_IBB) as Element).filter((d) => d.attrs.sid === sid);
  blocks.forEach((d, i) => expect(Number(d.attrs.seq)).toBe(i % 65536));
  return Buffer.concat(blocks.map((d) => Buffer.from(d.getText(), 'base64')));
}

describe('file transfer through the server', () => {
  let srv: TestServer;
  let alice: TestClient;
  let bob: TestClient;
  let bobIbb: { open: ReturnType<typeof inbox>; data: ReturnType<typeof inbox>; close: ReturnType<typeof inbox> };
  let bobJingle: ReturnType<typeof inbox>;
  let aliceJingle: ReturnType<typeof inbox>;
  const sockets: net.Socket[] = [];

  beforeAll(async () => {
    srv = await startTestServer({ modules: { proxy65: { port: 0 } } });
    const [a, b] = [uniqueUser('alice'), uniqueUser('bob')];
    for (const u of [a, b]) await srv.addUser(u);
    alice = await connect({ port: srv.ports.c2s as number, username: a });
    bob = await connect({ port: srv.ports.c2s as number, username: b });
    bobIbb = { open: inbox(bob, NS_IBB, 'open'), data: inbox(bob, NS_IBB, 'data'), close: inbox(bob, NS_IBB, 'close') };
    bobJingle = inbox(bob, NS_JINGLE, 'jingle');
    aliceJingle = inbox(alice, NS_JINGLE, 'jingle');
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    for (const c of [alice, bob]) await c?.stop();
    await srv?.close();
  });

  it('in-band bytestreams (XEP-0047): every iq arrives unchanged and the file intact', async () => {
    const file = randomBytes(150 * 1024 + 123);
    const sid = `ibb${randomBytes(4).toString('hex')}`;
    const sent = await sendIbb(alice, bob.jid, sid, file);
    const received = [...bobIbb.open.all, ...bobIbb.data.all, ...bobIbb.close.all].filter((iq) => iq.getChildElements()[0]?.attrs.sid === sid);
    expect(received.length).toBe(sent.length);
    const byId = new Map(received.map((r) => [r.attrs.id, r]));
    for (const s of sent) expectRoutedUnchanged(byId.get(s.attrs.id) as Element, s, alice.jid);
    expect(ibbBytes(bobIbb.data.all, sid).equals(file)).toBe(true);
  });

  it('IBB to a resource that is not online is refused, not lost', async () => {
    const e = await iqError(alice, xml('iq', { type: 'set', to: `${bob.jid.split('/')[0]}/gone` }, xml('open', { xmlns: NS_IBB, sid: 'x', 'block-size': '4096' })));
    expect(e.condition).toBe('service-unavailable');
  });

  /** session-initiate offering `file` with `transport`; bob receives it unchanged. */
  async function initiate(jsid: string, file: Buffer, transport: Element): Promise<void> {
    const initiate = xml(
      'iq',
      { type: 'set', to: bob.jid, id: `ji-${jsid}` },
      xml(
        'jingle',
        { xmlns: NS_JINGLE, action: 'session-initiate', initiator: alice.jid, sid: jsid },
        xml(
          'content',
          { creator: 'initiator', name: 'a-file-offer', senders: 'initiator' },
          xml('description', { xmlns: NS_FT }, xml('file', {}, xml('media-type', {}, 'application/octet-stream'), xml('name', {}, 'report.bin'), xml('size', {}, String(file.length)), xml('hash', { xmlns: NS_HASHES, algo: 'sha-256' }, sha256(file).toString('base64')))),
          transport,
        ),
      ),
    );
    await alice.iq(initiate);
    const got = await bobJingle.next((el) => el.getChild('jingle', NS_JINGLE)?.attrs.sid === jsid);
    expectRoutedUnchanged(got, initiate, alice.jid);
  }

  async function jingle(from: TestClient, to: string, jsid: string, action: string, ...children: Element[]): Promise<Element> {
    const iq = xml('iq', { type: 'set', to, id: `j-${action}-${jsid}-${randomBytes(2).toString('hex')}` }, xml('jingle', { xmlns: NS_JINGLE, action, sid: jsid, ...(action === 'session-accept' ? { responder: bob.jid } : {}) }, ...children));
    await from.iq(iq);
    const box = from === alice ? bobJingle : aliceJingle;
    const got = await box.next((el) => el.attrs.id === iq.attrs.id);
    expectRoutedUnchanged(got, iq, from.jid);
    return got;
  }

  /** Bob's view of the offer: the expected size and SHA-256 (XEP-0234 §3). */
  function offered(jsid: string): { size: number; hash: Buffer } {
    const init = bobJingle.all.find((el) => el.getChild('jingle', NS_JINGLE)?.attrs.sid === jsid && el.getChild('jingle', NS_JINGLE)?.attrs.action === 'session-initiate') as Element;
    const f = (init.getChild('jingle', NS_JINGLE) as Element).getChild('content')?.getChild('description', NS_FT)?.getChild('file') as Element;
    return { size: Number(f.getChildText('size')), hash: Buffer.from(f.getChild('hash', NS_HASHES)?.getText() ?? '', 'base64') };
  }

  it('Jingle file transfer (XEP-0234) over an IBB transport (XEP-0261)', async () => {
    const file = randomBytes(100 * 1024 + 7);
    const jsid = `js${randomBytes(4).toString('hex')}`;
    const ibbSid = `ch${randomBytes(4).toString('hex')}`;
    await initiate(jsid, file, xml('transport', { xmlns: NS_JIBB, 'block-size': '4096', sid: ibbSid }));
    await jingle(bob, alice.jid, jsid, 'session-accept', xml('content', { creator: 'initiator', name: 'a-file-offer', senders: 'initiator' }, xml('description', { xmlns: NS_FT }), xml('transport', { xmlns: NS_JIBB, 'block-size': '4096', sid: ibbSid })));
    await sendIbb(alice, bob.jid, ibbSid, file);
    const got = ibbBytes(bobIbb.data.all, ibbSid);
    const want = offered(jsid);
    expect(got.length).toBe(want.size);
    expect(sha256(got).equals(want.hash)).toBe(true);
    await jingle(alice, bob.jid, jsid, 'session-terminate', xml('reason', {}, xml('success')));
  });

  it('Jingle file transfer over SOCKS5 (XEP-0260) with the server proxy as the candidate', async () => {
    // The initiator finds the proxy's address (XEP-0065 §4) and offers it as a proxy candidate.
    const res = await alice.iq(xml('iq', { type: 'get', to: `proxy.${srv.domain}` }, xml('query', { xmlns: NS_BS })));
    const sh = (res.getChild('query', NS_BS) as Element).getChild('streamhost') as Element;
    const file = randomBytes(400 * 1024 + 1);
    const jsid = `js${randomBytes(4).toString('hex')}`;
    const tsid = `ts${randomBytes(4).toString('hex')}`;
    const dstaddr = s5bHash(tsid, alice.jid, bob.jid);
    await initiate(
      jsid,
      file,
      xml('transport', { xmlns: NS_JS5B, sid: tsid, mode: 'tcp', dstaddr }, xml('candidate', { cid: 'proxy1', host: sh.attrs.host, jid: sh.attrs.jid, port: sh.attrs.port, priority: String(10 << 16), type: 'proxy' })),
    );
    // Bob connects to the offered candidate with the hash of (sid, initiator, responder).
    const cand = offeredCandidate(jsid);
    const b = await socks5Connect(Number(cand.attrs.port), s5bHash(tsid, alice.jid, bob.jid), cand.attrs.host as string);
    sockets.push(b.sock);
    await jingle(bob, alice.jid, jsid, 'session-accept', xml('content', { creator: 'initiator', name: 'a-file-offer', senders: 'initiator' }, xml('description', { xmlns: NS_FT }), xml('transport', { xmlns: NS_JS5B, sid: tsid, mode: 'tcp' })));
    await jingle(bob, alice.jid, jsid, 'transport-info', xml('content', { creator: 'initiator', name: 'a-file-offer' }, xml('transport', { xmlns: NS_JS5B, sid: tsid }, xml('candidate-used', { cid: 'proxy1' }))));
    // Bob offered no candidates of his own.
    await jingle(alice, bob.jid, jsid, 'transport-info', xml('content', { creator: 'initiator', name: 'a-file-offer' }, xml('transport', { xmlns: NS_JS5B, sid: tsid }, xml('candidate-error'))));
    // XEP-0260 §2.4: the initiator connects to the proxy too, activates it, and says so.
    const a = await socks5Connect(Number(sh.attrs.port), dstaddr, sh.attrs.host as string);
    sockets.push(a.sock);
    await alice.iq(xml('iq', { type: 'set', to: sh.attrs.jid }, xml('query', { xmlns: NS_BS, sid: tsid }, xml('activate', {}, bob.jid))));
    await jingle(alice, bob.jid, jsid, 'transport-info', xml('content', { creator: 'initiator', name: 'a-file-offer' }, xml('transport', { xmlns: NS_JS5B, sid: tsid }, xml('activated', { cid: 'proxy1' }))));
    a.sock.end(file);
    const got = await b.reader.rest();
    const want = offered(jsid);
    expect(got.length).toBe(want.size);
    expect(sha256(got).equals(want.hash)).toBe(true);
    await jingle(alice, bob.jid, jsid, 'session-terminate', xml('reason', {}, xml('success')));
  });

  /** The proxy candidate in the session-initiate bob received. */
  function offeredCandidate(jsid: string): Element {
    const init = bobJingle.all.find((el) => el.getChild('jingle', NS_JINGLE)?.attrs.sid === jsid) as Element;
    return (init.getChild('jingle', NS_JINGLE) as Element).getChild('content')?.getChild('transport', NS_JS5B)?.getChild('candidate') as Element;
  }
});
