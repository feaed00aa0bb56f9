// Interop (issue 15 §3): StanzaJS (npm stanza) with its default settings — SASL mechanism chosen by
// the library, XEP-0198 with resumption, automatic reconnection — over WebSocket (RFC 7395) and
// BOSH (XEP-0206): StanzaJS 12 has no TCP transport, so it reaches the web container (in the
// server process; no mux path). It runs in its own Node process trusting the server's CA through
// NODE_EXTRA_CA_CERTS. Resumption: the WebSocket goes through a relay that cuts it.
// The client is fixtures/stanza_client.mjs; the matrix is scripted-suite.ts.
import { join } from 'node:path';
import { JsonLinesProcess } from '../helpers/interop.js';
import { type Route, scriptedClientSuite } from './scripted-suite.js';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'stanza_client.mjs');
const websocket: Route = { name: 'WebSocket', id: 'ws', port: (s) => s.http.tlsPort };
const bosh: Route = { name: 'BOSH', id: 'bosh', port: (s) => s.http.tlsPort };

scriptedClientSuite({
  name: 'StanzaJS',
  prefix: 'stz',
  require: async () => {},
  routes: [websocket, bosh],
  resumeRoutes: [{ ...websocket, id: 'resume-ws' }],
  mechanism: /^SCRAM-SHA-(1|256)(-PLUS)?$/,
  start(srv, local, route, port) {
    const endpoint = route === bosh ? ['--bosh', `https://127.0.0.1:${port}/http-bind`] : ['--websocket', `wss://127.0.0.1:${port}/xmpp-websocket`];
    const args = [SCRIPT, '--jid', `${local}@localhost`, '--password', srv.users.get(local) as string, ...endpoint];
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: srv.trustAnchor };
    delete env.NODE_TLS_REJECT_UNAUTHORIZED;
    return JsonLinesProcess.spawn(`StanzaJS ${local}`, process.execPath, args, env);
  },
});
