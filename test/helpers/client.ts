// Real XMPP clients (@xmpp/client) for integration tests, with small helpers to await stanzas.
import { randomBytes } from 'node:crypto';
import { client, xml, type Client } from '@xmpp/client';
import type { Element } from 'ltx';

export { xml };

export interface TestClient {
  xmpp: Client;
  jid: string;
  /** Every stanza received, in order. */
  received: Element[];
  /** Resolves the next received stanza matching the predicate (also searches already received ones not yet taken). */
  waitFor(pred: (el: Element) => boolean, timeoutMs?: number): Promise<Element>;
  send(el: Element): Promise<void>;
  iq(el: Element, timeoutMs?: number): Promise<Element>;
  stop(): Promise<void>;
}

export interface ConnectOptions {
  port: number;
  username: string;
  password?: string;
  domain?: string;
  resource?: string;
  directTls?: boolean;
  mechanism?: 'PLAIN' | 'SCRAM-SHA-1';
}

/** Sends an iq that must fail; resolves its error condition and type (throws if it succeeds). */
export async function iqError(c: TestClient, el: Element): Promise<{ condition: string; type: string }> {
  try {
    const r = await c.iq(el);
    throw new Error(`expected an error, got ${r}`);
  } catch (e) {
    const err = e as { condition?: string; type?: string };
    if (!err.condition) throw e;
    return { condition: err.condition, type: err.type ?? '' };
  }
}

const NS_BARRIER = 'urn:parley:test:barrier';
type IqCallee = { get(ns: string, name: string, handler: (ctx: { element: Element }) => Element): void };
let barriers = 0;

/**
 * The end of a negative test ("X never reaches B"): sleeping, then finding nothing, passes when X
 * is merely late. Instead, after the action that must not produce X, `sender` sends an iq to
 * `recipient`'s full JID through the server, and this resolves when `recipient` itself has answered
 * it. The server handles each session's stanzas one at a time, in order (each to its end, routing
 * included), and writes to each connection in order; and the client records a stanza when it parses
 * it, before it answers any iq that came after. So once this resolves, whatever the server did for
 * `sender`'s earlier stanzas on the way to `recipient` is in `recipient.received`: assert then.
 *
 * With no `recipient` (or `recipient === sender`): a ping to the server on the same session, for
 * "the server sent me nothing back": its reply is written after everything the server wrote to
 * this session while it handled the stanzas sent before the ping.
 *
 * `opts.via`: the address to send the iq to when the path under test is not the direct one, e.g.
 * `room@conference.localhost/nick` for what a room relays to an occupant (XEP-0045 §7.5 forwards
 * an iq to an occupant's real JID through the room, after the sender's earlier room stanzas).
 *
 * The barrier is an iq, so it never adds a message or presence to `received` (the iq itself is in
 * `received`, like every stanza) and is not archived, carbon-copied or stored offline. To a
 * recipient that sent CSI <inactive/> it is important, so it flushes what CSI holds: there, wait for
 * the server's idle ping instead (test/integration/csi.test.ts). It does not order what other
 * sessions (or timers) cause: see afterSessionClosed() in server.ts.
 */
export async function barrier(sender: TestClient, recipient: TestClient = sender, opts: { via?: string; timeoutMs?: number } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  if (recipient === sender && !opts.via) {
    const domain = (sender.jid.split('/')[0] as string).split('@').pop() as string;
    await sender.iq(xml('iq', { type: 'get', to: domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })), timeoutMs);
    return;
  }
  // Upper case only: tests look for their own lower-case markers in what a client received.
  const token = `BARRIER-${++barriers}-${randomBytes(6).toString('hex').toUpperCase()}`;
  const reply = await sender.iq(xml('iq', { type: 'get', to: opts.via ?? recipient.jid }, xml('barrier', { xmlns: NS_BARRIER, token })), timeoutMs);
  // Only the recipient's client can echo the token: a result from the server proves nothing.
  if (reply.getChild('barrier', NS_BARRIER)?.attrs.token !== token) {
    throw new Error(`barrier: the answer did not come from ${recipient.jid}: ${String(reply)}`);
  }
}

export async function connect(opts: ConnectOptions): Promise<TestClient> {
  const domain = opts.domain ?? 'localhost';
  const xmpp = client({
    service: `${opts.directTls ? 'xmpps' : 'xmpp'}://127.0.0.1:${opts.port}`,
    domain,
    resource: opts.resource,
    credentials: async (authenticate: (c: unknown, m: string) => Promise<void>, mechanisms: string[]) => {
      const mech = opts.mechanism ?? (mechanisms.includes('SCRAM-SHA-1') ? 'SCRAM-SHA-1' : mechanisms[0]);
      await authenticate({ username: opts.username, password: opts.password ?? 'secret-password' }, mech as string);
    },
  });
  // No automatic reconnects in tests.
  (xmpp as unknown as { reconnect: { stop(): void } }).reconnect.stop();
  fixStreamManagementCount(xmpp);
  xmpp.on('error', () => {});
  const received: Element[] = [];
  const waiters: { pred: (el: Element) => boolean; resolve: (el: Element) => void }[] = [];
  const taken = new Set<Element>();
  xmpp.on('stanza', (el: Element) => {
    received.push(el);
    for (let i = 0; i < waiters.length; i++) {
      const w = waiters[i];
      if (w?.pred(el)) {
        waiters.splice(i, 1);
        taken.add(el);
        w.resolve(el);
        return;
      }
    }
  });
  // Answers barrier() iqs (above) with the token they carry: only this client can produce it.
  (xmpp as unknown as { iqCallee: IqCallee }).iqCallee.get(NS_BARRIER, 'barrier', (ctx) => xml('barrier', { xmlns: NS_BARRIER, token: ctx.element.attrs.token }));
  const addr = await xmpp.start();
  const tc: TestClient = {
    xmpp,
    jid: String(addr),
    received,
    waitFor(pred, timeoutMs = 5000) {
      const already = received.find((el) => !taken.has(el) && pred(el));
      if (already) {
        taken.add(already);
        return Promise.resolve(already);
      }
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (el: Element) => { clearTimeout(t); resolve(el); } };
        const t = setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i !== -1) waiters.splice(i, 1);
          reject(new Error(`timed out waiting for stanza; received: ${received.map(String).join('\n')}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    send: (el) => xmpp.send(el),
    iq: (el, timeoutMs = 5000) => (xmpp as unknown as { iqCaller: { request(el: Element, t: number): Promise<Element> } }).iqCaller.request(el, timeoutMs),
    async stop() {
      try {
        await xmpp.stop();
      } catch {
        /* already gone */
      }
    },
  };
  return tc;
}

/**
 * @xmpp/client 0.14 counts XEP-0198 'h' in a middleware that runs after its iq caller and callee,
 * which consume iq replies and requests without passing them on: its 'h' misses every iq, and a
 * resumption then gets stanzas it already had again. Count the iqs the library's counter missed.
 */
function fixStreamManagementCount(xmpp: Client): void {
  type Emit = (event: string, ...args: unknown[]) => boolean;
  const entity = xmpp as unknown as { streamManagement: { inbound: number }; emit: Emit };
  const sm = entity.streamManagement;
  const emit = entity.emit.bind(xmpp);
  entity.emit = (event, ...args) => {
    if (event !== 'element') return emit(event, ...args);
    const el = args[0] as Element;
    const before = sm.inbound;
    const r = emit(event, ...args);
    if (el.name === 'iq' && sm.inbound === before) sm.inbound += 1;
    return r;
  };
}
