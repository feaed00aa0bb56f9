// A minimal SOCKS5 client (RFC 1928 as XEP-0065 uses it: no authentication, CONNECT to a
// DOMAINNAME that is the stream hash, port 0) and a byte reader over a socket, for proxy tests.
import { createHash } from 'node:crypto';
import net from 'node:net';

/** SHA1(SID + Requester JID + Target JID), hex (XEP-0065 §6.3.2), computed independently of the server. */
export function s5bHash(sid: string, requester: string, target: string): string {
  return createHash('sha1').update(sid + requester + target).digest('hex');
}

/** Collects what a socket receives; waits for byte counts, the end or the close. */
export class SockReader {
  buf = Buffer.alloc(0);
  ended = false;
  closed = false;
  private wakers: (() => void)[] = [];

  constructor(readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
  }

  private until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} (have ${this.buf.length} bytes, ended=${this.ended}, closed=${this.closed})`)), timeoutMs);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.wakers.push(check);
      };
      check();
    });
  }

  /** Takes exactly n bytes; rejects when the socket ends first. */
  async take(n: number, timeoutMs = 5000): Promise<Buffer> {
    await this.until(() => this.buf.length >= n || this.ended || this.closed, `${n} bytes`, timeoutMs);
    if (this.buf.length < n) throw new Error(`connection ended after ${this.buf.length} of ${n} bytes`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Everything until the peer ends or closes. */
  async rest(timeoutMs = 10_000): Promise<Buffer> {
    await this.until(() => this.ended || this.closed, 'the end of the stream', timeoutMs);
    const out = this.buf;
    this.buf = Buffer.alloc(0);
    return out;
  }

  /** The proxy closed the connection (its FIN or a reset); our side is then closed too. */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    await this.until(() => this.ended || this.closed, 'close', timeoutMs);
    this.sock.destroy();
  }
}

export function tcpConnect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host, allowHalfOpen: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export function connectRequest(hash: string, port = 0, atyp = 0x03, cmd = 0x01): Buffer {
  const addr = Buffer.from(hash, 'latin1');
  const b = Buffer.alloc(5 + addr.length + 2);
  b.set([0x05, cmd, 0x00, atyp, addr.length]);
  addr.copy(b, 5);
  b.writeUInt16BE(port, 5 + addr.length);
  return b;
}

/**
 * Opens a SOCKS5 connection for a stream hash: greeting (no-auth), CONNECT, and checks the
 * success reply echoes the hash (XEP-0065 §6.3.2). Returns the socket with its reader.
 */
export async function socks5Connect(port: number, hash: string, host = '127.0.0.1'): Promise<{ sock: net.Socket; reader: SockReader }> {
  const sock = await tcpConnect(port, host);
  const reader = new SockReader(sock);
  sock.write(Buffer.from([0x05, 0x01, 0x00]));
  const method = await reader.take(2);
  if (method[0] !== 0x05 || method[1] !== 0x00) throw new Error(`greeting refused: ${method.toString('hex')}`);
  sock.write(connectRequest(hash));
  const head = await reader.take(5);
  if (head[1] !== 0x00) throw new Error(`CONNECT refused with ${head[1]}`);
  const rest = await reader.take((head[4] as number) + 2);
  const bound = rest.subarray(0, head[4] as number).toString('latin1');
  if (head[3] !== 0x03 || bound !== hash || rest.readUInt16BE(head[4] as number) !== 0) throw new Error('unexpected CONNECT reply');
  return { sock, reader };
}
