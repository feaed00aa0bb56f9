// Write coalescing: everything written to a socket during one turn of the event loop leaves in one
// writev (one syscall, one TLS record) when the turn ends. Routing a message costs a write per
// stanza otherwise; on a mux link that is one syscall per message per direction.
import type { Writable } from 'node:stream';

const pending = new Set<Writable>();
let scheduled = false;

function flush(): void {
  scheduled = false;
  for (const s of pending) s.uncork();
  pending.clear();
}

/** Writes `data`, holding it until the end of this event-loop turn; returns what write() returned. */
export function writeCoalesced(sock: Writable, data: string | Buffer): boolean {
  if (!pending.has(sock)) {
    sock.cork();
    pending.add(sock);
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  }
  return sock.write(data);
}
