// A loopback port free right now, for servers whose address must be known before they start (an
// identity provider registers Parley's callback URL; a mux link port both sides are configured
// with; slapd and PostgreSQL take a port on their command line).
import { createServer } from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
