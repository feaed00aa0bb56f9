// A raw RFC 7395 test client on `ws`: sends exactly the messages it is given, records every message
// the server sends (one element each), and can walk a stream through SASL PLAIN and binding.
import WebSocket from 'ws';
import { plainPayload } from './raw.js';

export const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';
export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

export function openFrame(to = 'localhost'): string {
  return `<open xmlns='${NS_FRAMING}' to='${to}' version='1.0'/>`;
}

export class WsClient {
  /** Every message received, in order. */
  readonly messages: string[] = [];
  /** Where the next waitFor() starts searching. */
  cursor = 0;
  closeCode: number | null = null;
  closeReason = '';
  jid = '';
  private waiters = new Set<() => void>();
  private ids = 0;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      this.messages.push(isBinary ? `[binary ${String(data)}]` : String(data));
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = String(reason);
      this.wake();
    });
    ws.on('error', () => {});
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Connects; rejects with the HTTP status when the upgrade is refused. */
  static connect(url: string, opts: { protocols?: string[]; origin?: string } = {}): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, opts.protocols ?? ['xmpp'], { origin: opts.origin, rejectUnauthorized: false });
      ws.once('unexpected-response', (_req, res) => {
        reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }));
        ws.terminate();
      });
      ws.once('error', reject);
      ws.once('open', () => {
        ws.off('error', reject);
        resolve(new WsClient(ws));
      });
    });
  }

  send(frame: string | Buffer, binary = false): void {
    this.ws.send(frame, { binary });
  }

  /** The first message from `cursor` on matching `re`; moves the cursor past it. */
  waitFor(re: RegExp, timeoutMs = 5000): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        for (let i = this.cursor; i < this.messages.length; i++) {
          const m = this.messages[i] as string;
          if (re.test(m)) {
            this.cursor = i + 1;
            this.waiters.delete(check);
            clearTimeout(timer);
            resolve(m);
            return true;
          }
        }
        return false;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out waiting for ${re}; got:\n${this.messages.slice(this.cursor).join('\n')}`));
      }, timeoutMs);
      if (!check()) this.waiters.add(check);
    });
  }

  waitClosed(timeoutMs = 5000): Promise<number> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.closeCode === null) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(this.closeCode);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error('timed out waiting for close'));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** Opens the stream, authenticates with PLAIN, restarts the stream; resolves the new features. */
  async authenticate(user: string, password: string, to = 'localhost'): Promise<string> {
    this.send(openFrame(to));
    await this.waitFor(/^<open\b/);
    await this.waitFor(/^<stream:features\b/);
    this.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${plainPayload(user, password)}</auth>`);
    const r = await this.waitFor(/^<(success|failure)\b/);
    if (!r.startsWith('<success')) throw new Error(`authentication failed: ${r}`);
    this.send(openFrame(to));
    await this.waitFor(/^<open\b/);
    return this.waitFor(/^<stream:features\b/);
  }

  async bind(resource = 'ws'): Promise<string> {
    const id = `bind${++this.ids}`;
    this.send(`<iq xmlns='jabber:client' type='set' id='${id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
    const r = await this.waitFor(new RegExp(`^<iq\\b[^>]*\\bid=['"]${id}['"]`));
    const jid = /<jid>([^<]+)<\/jid>/.exec(r)?.[1];
    if (!jid) throw new Error(`bind failed: ${r}`);
    this.jid = jid;
    return jid;
  }

  terminate(): void {
    this.ws.terminate();
  }
}
