// Interop (issue 15 §3): nbxmpp (Gajim's library, Debian python3-nbxmpp, on a GLib main loop)
// configured as Gajim configures an account with a custom host and an accepted certificate; the
// SASL mechanism and XEP-0198 resumption are the library's defaults.
// The client is fixtures/nbxmpp_client.py; the matrix is scripted-suite.ts.
import { join } from 'node:path';
import { JsonLinesProcess, requirePythonModule, SYSTEM_PYTHON } from '../helpers/interop.js';
import { type Route, scriptedClientSuite, TCP_RESUME_ROUTES, TCP_ROUTES } from './scripted-suite.js';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'nbxmpp_client.py');
// Gajim also connects over WebSocket (RFC 7395) to the web container.
const websocket: Route = { name: 'WebSocket', id: 'ws', port: (s) => s.http.tlsPort };

scriptedClientSuite({
  name: 'nbxmpp',
  prefix: 'nbx',
  require: async () => {
    await requirePythonModule('gi', 'python3-gi');
    await requirePythonModule('nbxmpp', 'python3-nbxmpp');
  },
  // nbxmpp 4 leaves out the -PLUS variants (it has no channel-binding data).
  mechanism: /^SCRAM-SHA-(256|512)$/,
  routes: [...TCP_ROUTES, websocket],
  resumeRoutes: [...TCP_RESUME_ROUTES, { ...websocket, id: 'resume-ws' }],
  start(srv, local, route, port) {
    const where = route.name === websocket.name ? ['--websocket', `wss://127.0.0.1:${port}/xmpp-websocket`] : ['--port', String(port)];
    const args = [SCRIPT, '--user', local, '--password', srv.users.get(local) as string, ...where, '--cert', srv.certPath, '--debug'];
    if (route.directTls) args.push('--direct-tls');
    return JsonLinesProcess.spawn(`nbxmpp ${local}`, SYSTEM_PYTHON, args);
  },
});
