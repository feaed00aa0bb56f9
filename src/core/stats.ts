// Server-wide counters for the operations endpoints (/metrics, issue 6). The stanza path only
// bumps plain integer fields here; the metrics registry (src/transports/ops.ts) reads them when it
// is scraped, so nothing on the hot path allocates, hashes a label set or calls into prom-client.

/** Stanza kinds counted separately; anything else at top level is not a stanza. */
export type StanzaKind = 'message' | 'presence' | 'iq';

export class ServerStats {
  messagesIn = 0;
  presencesIn = 0;
  iqsIn = 0;
  messagesOut = 0;
  presencesOut = 0;
  iqsOut = 0;
  /**
   * Failed SASL exchanges by `mechanism\u0000condition`. Both parts come from the server's own
   * vocabulary (offered mechanism names, RFC 6120 §6.5 conditions), never from client input, so
   * the map stays small. Failures are rare: a Map costs nothing that matters here.
   */
  readonly authFailures = new Map<string, number>();
  /** Unauthenticated connections closed to admit a newer one from the same address. */
  preAuthEvicted = 0;

  /** A stanza (message, presence or iq) received on a bound client stream. */
  stanzaIn(name: string): void {
    if (name === 'message') this.messagesIn++;
    else if (name === 'presence') this.presencesIn++;
    else if (name === 'iq') this.iqsIn++;
  }

  /** A stanza written to a client session (after the c2s.send filters let it through). */
  stanzaOut(name: string): void {
    if (name === 'message') this.messagesOut++;
    else if (name === 'presence') this.presencesOut++;
    else if (name === 'iq') this.iqsOut++;
  }

  /** A SASL failure sent to a client; `mechanism` is '' before one was chosen. */
  authFailure(mechanism: string, condition: string): void {
    const key = `${mechanism || 'none'}\u0000${condition}`;
    this.authFailures.set(key, (this.authFailures.get(key) ?? 0) + 1);
  }
}
