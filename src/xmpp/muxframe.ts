// Framing of the mux link (docs/mux-protocol.md). A frame is a 9-byte header — type (u8),
// connection id (u32 BE), payload length (u32 BE) — followed by the payload. The decoder is
// incremental and bounds the payload size, so a broken or hostile peer cannot make either side
// buffer without limit.

import { createHmac, timingSafeEqual } from 'node:crypto';

export const FrameType = {
  /** server -> mux: link challenge {nonce} (JSON) */
  HELLO: 1,
  /** mux -> server: {name, nonce, proof} (JSON) */
  AUTH: 2,
  /** server -> mux: {proof} proving the server knows the secret too (JSON) */
  AUTH_OK: 3,
  /** mux -> server: a client connected {remoteAddress, remotePort, localPort, tls, cb} (JSON) */
  OPEN: 4,
  /** both: raw client bytes */
  DATA: 5,
  /** both: the connection is closed {reason} (JSON); the receiver closes its side, never answers */
  CLOSE: 6,
  /** server -> mux: upgrade this connection to TLS {servername} (JSON) */
  STARTTLS: 7,
  /** mux -> server: TLS is up {protocol, cb} (JSON) */
  TLS_OK: 8,
  /** server -> mux: stop / resume reading from this client (flow control) */
  PAUSE: 9,
  RESUME: 10,
  /** mux -> server: bytes queued towards this client and not yet written {bytes} (JSON) */
  BACKLOG: 11,
  /** both, connection id 0: keepalive */
  PING: 12,
  PONG: 13,
  /** mux -> server, connection id 0: periodic mux statistics (JSON) */
  STATS: 14,
} as const;

export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeCode = (typeof FrameType)[FrameTypeName];

export const HEADER_BYTES = 9;
/** Largest payload a peer may send in one frame. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;

export class FrameError extends Error {
  override name = 'FrameError';
}

export function encodeFrame(type: FrameTypeCode, conn: number, payload?: Buffer | string): Buffer {
  // Strings (stanzas) are encoded straight into the frame: one allocation, no intermediate copy.
  const len = payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.length;
  const out = Buffer.allocUnsafe(HEADER_BYTES + len);
  out.writeUInt8(type, 0);
  out.writeUInt32BE(conn >>> 0, 1);
  out.writeUInt32BE(len, 5);
  if (typeof payload === 'string') out.write(payload, HEADER_BYTES, 'utf8');
  else if (payload) payload.copy(out, HEADER_BYTES);
  return out;
}

export function encodeJson(type: FrameTypeCode, conn: number, value: unknown): Buffer {
  return encodeFrame(type, conn, JSON.stringify(value));
}


/** Incremental frame decoder; throws FrameError on a malformed stream. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(
    private readonly onFrame: (type: number, conn: number, payload: Buffer) => void,
    /** Largest payload accepted; the link raises it after authentication (4 KiB before). */
    public maxPayload = MAX_FRAME_PAYLOAD,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= HEADER_BYTES) {
      const head = this.peek(HEADER_BYTES);
      const type = head.readUInt8(0);
      const conn = head.readUInt32BE(1);
      const len = head.readUInt32BE(5);
      if (type < FrameType.HELLO || type > FrameType.STATS) throw new FrameError(`unknown frame type ${type}`);
      if (len > this.maxPayload) throw new FrameError(`frame payload of ${len} bytes exceeds ${this.maxPayload}`);
      if (this.buffered < HEADER_BYTES + len) return;
      const frame = this.take(HEADER_BYTES + len);
      this.onFrame(type, conn, frame.subarray(HEADER_BYTES));
    }
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0] as Buffer).length < n) this.chunks = [Buffer.concat(this.chunks)];
    return (this.chunks[0] as Buffer).subarray(0, n);
  }

  private take(n: number): Buffer {
    let first = this.chunks[0] as Buffer;
    if (first.length < n) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

export function parseJson<T>(payload: Buffer): T {
  try {
    return JSON.parse(payload.toString('utf8')) as T;
  } catch {
    throw new FrameError('invalid JSON payload');
  }
}

/** Link authentication proof: HMAC-SHA256 over a label and the parts, each NUL-separated. */
export function authProof(secret: Buffer, label: string, ...parts: string[]): Buffer {
  const h = createHmac('sha256', secret);
  h.update(label);
  for (const p of parts) h.update(`\u0000${p}`);
  return h.digest();
}

/** Constant-time check of a base64 proof against the expected bytes. */
export function proofMatches(expected: Buffer, given: string | undefined): boolean {
  if (typeof given !== 'string') return false;
  const g = Buffer.from(given, 'base64');
  return g.length === expected.length && timingSafeEqual(g, expected);
}
