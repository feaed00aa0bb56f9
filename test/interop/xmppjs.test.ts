// Interop (issue 15 §3): @xmpp/client (xmpp.js) with its default settings — the SASL mechanism
// chosen by the library, XEP-0198 with resumption and automatic reconnection — in its own Node
// process trusting the server's CA through NODE_EXTRA_CA_CERTS (real verification).
// The client is fixtures/xmppjs_client.mjs; the matrix is scripted-suite.ts.
import { join } from 'node:path';
import { JsonLinesProcess } from '../helpers/interop.js';
import { scriptedClientSuite } from './scripted-suite.js';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'xmppjs_client.mjs');

scriptedClientSuite({
  name: '@xmpp/client',
  prefix: 'xjs',
  require: async () => {},
  // xmpp.js 0.14 implements SCRAM-SHA-1 and PLAIN and prefers SCRAM-SHA-1.
  mechanism: /^SCRAM-SHA-1$/,
  start(srv, local, route, port) {
    const args = [SCRIPT, '--user', local, '--password', srv.users.get(local) as string, '--port', String(port)];
    if (route.directTls) args.push('--direct-tls');
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: srv.trustAnchor };
    delete env.NODE_TLS_REJECT_UNAUTHORIZED;
    return JsonLinesProcess.spawn(`@xmpp/client ${local}`, process.execPath, args, env);
  },
});
