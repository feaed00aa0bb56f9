// The interop matrix for a client library driven by a small script (JSON lines out, commands in:
// see fixtures/): default login over STARTTLS and direct TLS, to the server process and through
// a standalone mux, a chat message each way with an @xmpp/client user, and XEP-0198 resumption
// after the TCP connection is cut under the client (a relay in front of the port), both paths.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestClient } from '../helpers/client.js';
import {
  chat,
  COMBOS,
  connectPeer,
  CutRelay,
  InteropServer,
  type JsonLinesProcess,
  PATHS,
  peerGot,
  uniqueBody,
  waitFor,
} from '../helpers/interop.js';

/** One way to reach the server: a TCP port (server process or mux, STARTTLS or direct TLS) or a web container endpoint. */
export interface Route {
  /** In test names. */
  name: string;
  /** In user names. */
  id: string;
  port(srv: InteropServer): number;
  directTls?: boolean;
}

/** The TCP matrix: server process and mux, STARTTLS and direct TLS. */
export const TCP_ROUTES: Route[] = COMBOS.map(([path, mode]) => ({ name: `${path}, ${mode}`, id: `${path}-${mode}`, port: (s) => s.ports[path][mode], directTls: mode === 'directtls' }));
/** Resumption is tried over STARTTLS, to the server process and through the mux. */
export const TCP_RESUME_ROUTES: Route[] = PATHS.map((path) => ({ name: `${path}, starttls`, id: `resume-${path}`, port: (s) => s.ports[path].starttls }));

export interface ScriptedClient {
  /** Suite title and user-name prefix. */
  name: string;
  prefix: string;
  /** Throws when the client is not installed (naming the package). */
  require(): Promise<void>;
  /** Starts the client for `local` through `route`, at `port` (the route's, or a relay's in front of it). */
  start(srv: InteropServer, local: string, route: Route, port: number): JsonLinesProcess;
  routes?: Route[];
  resumeRoutes?: Route[];
  /** The SASL mechanism the client picks by default (server log). */
  mechanism: RegExp;
}

export function scriptedClientSuite(client: ScriptedClient): void {
  const routes = client.routes ?? TCP_ROUTES;
  const resumeRoutes = client.resumeRoutes ?? TCP_RESUME_ROUTES;
  describe(`interop: ${client.name}`, () => {
    let srv: InteropServer;
    let peer: TestClient;
    const procs: JsonLinesProcess[] = [];
    const relays: CutRelay[] = [];

    beforeAll(async () => {
      await client.require();
        const users: Record<string, string> = { peer: 'peer-Secret-0' };
      for (const r of [...routes, ...resumeRoutes]) users[`${client.prefix}-${r.id}`] = `pw-${r.id}-1`;
      srv = await InteropServer.start(client.prefix, users);
      peer = await connectPeer(srv, 'peer');
    });

    afterAll(async () => {
      await Promise.all(procs.map((p) => p.stop()));
      await Promise.all(relays.map((r) => r.close()));
      await peer?.stop();
      await srv?.stop();
    });

    function start(local: string, route: Route, port: number): JsonLinesProcess {
      const p = client.start(srv, local, route, port);
      p.context = () => srv.describe();
      procs.push(p);
      return p;
    }
    const state = (p: JsonLinesProcess) => () => p.describe();

    it.concurrent.for(routes.map((r) => [r.name, r] as const))('%s: default login, message both ways', async ([, route]) => {
      const local = `${client.prefix}-${route.id}`;
      const c = start(local, route, route.port(srv));
      const jid = String((await c.event('session start', (e) => e.event === 'online')).jid);
      expect(jid.startsWith(`${local}@localhost/`), jid).toBe(true);
      // The first mechanism the client tried worked (no fallback after a failure).
      expect(c.events.filter((e) => e.event === 'failed_auth'), state(c)()).toEqual([]);
      expect(await srv.mechanismOf(`${local}@localhost`)).toMatch(client.mechanism);

      const toClient = uniqueBody(`to-${local}`);
      await peer.send(chat(jid, toClient));
      const got = await c.event(`"${toClient}"`, (e) => e.event === 'message' && e.body === toClient);
      expect(got.from).toBe(peer.jid);
      expect(got.delay).toBe(false);

      const fromClient = uniqueBody(`from-${local}`);
      c.command({ cmd: 'send', to: 'peer@localhost', body: fromClient });
      expect((await peerGot(peer, fromClient, state(c))).attrs.from).toBe(jid);

      c.command({ cmd: 'quit' });
      await c.event('the end of the session', (e) => e.event === 'disconnected');
    });

    it.concurrent.for(resumeRoutes.map((r) => [r.name, r] as const))('%s: the stream is resumed (XEP-0198) after the connection is cut', async ([, route]) => {
      const local = `${client.prefix}-${route.id}`;
      const relay = await CutRelay.start(route.port(srv));
      relays.push(relay);
      const c = start(local, route, relay.port);
      const jid = String((await c.event('session start', (e) => e.event === 'online')).jid);
      const before = uniqueBody('before-cut');
      await peer.send(chat(jid, before));
      await c.event(`"${before}"`, (e) => e.event === 'message' && e.body === before);
      // Resumption was enabled: the server said so in <enabled resume='true'/> (its log: the session hibernates on a cut).
      expect(relay.cut()).toBe(1);
      await c.event('the disconnection', (e) => e.event === 'disconnected');
      const session = await waitFor(`the server session of ${jid}`, () => srv.records().find((r) => r.msg === 'resource bound' && r.jid === jid)?.session, 5000, state(c));
      await waitFor(`the server to hibernate the session of ${jid}`, () => srv.records().some((r) => r.session === session && r.msg === 'session hibernated'), 10_000, state(c));
      // A message sent while the client is away waits in the hibernated session.
      const during = uniqueBody('during-cut');
      await peer.send(chat(jid, during));
      const resumed = await c.event('stream resumption', (e) => e.event === 'resumed' || e.event === 'online' || e.event === 'resume_failed');
      expect(resumed.event, state(c)()).toBe('resumed');
      await waitFor(`"session resumed" for ${jid} in the server log`, () => srv.records().some((r) => r.session === session && r.msg === 'session resumed'), 5000, state(c));
      const got = await c.event(`"${during}" after resumption`, (e) => e.event === 'message' && e.body === during);
      expect(got.from).toBe(peer.jid);
      const after = uniqueBody('after-resume');
      c.command({ cmd: 'send', to: 'peer@localhost', body: after });
      expect((await peerGot(peer, after, state(c))).attrs.from).toBe(jid);
      // Exactly once each: nothing acknowledged before the cut comes again.
      expect(c.events.filter((e) => e.event === 'message' && e.body === before)).toHaveLength(1);
      expect(c.events.filter((e) => e.event === 'message' && e.body === during)).toHaveLength(1);
      c.command({ cmd: 'quit' });
    });

    // After the concurrent cases above (vitest runs a sequential test once they are done).
    it('the server logged no warning or error', () => srv.expectCleanLog());
  });
}
