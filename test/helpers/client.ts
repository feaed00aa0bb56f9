// Real XMPP clients (@xmpp/client) for integration tests, with small helpers to await stanzas.
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
