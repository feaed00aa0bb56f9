// What a session needs from the connection under it. The TCP listener (src/transports/tcp.ts) and,
// later, the mux link, BOSH and WebSocket implement it, so that every client speaks to the same
// session code.
/**
 * Channel-binding types a TLS connection can provide (RFC 9266 tls-exporter, RFC 5929
 * tls-server-end-point and tls-unique): a property of the transport, used by SASL -PLUS mechanisms.
 */
export type ChannelBindingType = 'tls-exporter' | 'tls-server-end-point' | 'tls-unique';

export interface TransportEvents {
  onTransportData(chunk: Buffer): void;
  /** The connection is gone (either side); called once. */
  onTransportClose(reason?: string): void;
  /** The transport's output buffer drained below its high-water mark. */
  onTransportDrain(): void;
}

/** How a client reached the server (metrics: sessions by transport). */
export type TransportKind = 'tcp' | 'mux' | 'websocket' | 'bosh';

export interface Transport {
  readonly kind: TransportKind;
  /** The client's real address (never a proxy's or mux's). */
  readonly remoteAddress: string;
  /**
   * Who vouches for `remoteAddress` when it is not this process's own socket: a standalone mux on
   * another host (its name). Per-address quotas and login bans are kept per voucher, so that a mux
   * claiming someone's address cannot get that address banned on other paths (issue 16 §9).
   */
  readonly reportedBy?: string;
  readonly localPort: number;
  /** TLS is established on this connection. */
  readonly secure: boolean;
  /** STARTTLS can be offered (a TLS context exists and TLS is not on yet). */
  readonly canStartTls: boolean;
  /** Bytes written but not yet flushed to the client. */
  readonly bufferedBytes: number;
  setHandlers(events: TransportEvents): void;
  write(data: string): void;
  /**
   * Writes `proceed` (the last plaintext bytes) and upgrades to TLS for `servername`, as one step so
   * that the client's handshake cannot race the upgrade. Bytes received before the handshake
   * completes are discarded.
   */
  startTls(servername: string, proceed: string): Promise<void>;
  channelBindingTypes(): ChannelBindingType[];
  channelBinding(type: ChannelBindingType): Buffer | null;
  pause(): void;
  resume(): void;
  /** Flushes and closes. */
  close(): void;
  /** Closes at once, dropping unsent data. */
  destroy(): void;
}

/**
 * The key per-address quotas and login bans use: the client's address, prefixed by the remote mux
 * that reported it (Transport.reportedBy), so that a mux cannot get an address banned or its
 * quota filled on other paths (issue 16 §9).
 */
export function addressKey(t: Pick<Transport, 'remoteAddress' | 'reportedBy'>): string {
  return t.reportedBy ? `${t.reportedBy}|${t.remoteAddress}` : t.remoteAddress;
}
