// Interop (issue 15 §3): slixmpp (Debian python3-slixmpp) with its default settings — the SASL
// mechanism chosen by the library (SCRAM with channel binding when offered), XEP-0198 with
// resumption — trusting the server's CA (the one thing a user sets besides address and port).
// The client is fixtures/slixmpp_client.py; the matrix is scripted-suite.ts.
import { join } from 'node:path';
import { JsonLinesProcess, requirePythonModule, SYSTEM_PYTHON } from '../helpers/interop.js';
import { scriptedClientSuite } from './scripted-suite.js';

const SCRIPT = join(import.meta.dirname, 'fixtures', 'slixmpp_client.py');

scriptedClientSuite({
  name: 'slixmpp',
  prefix: 'slix',
  require: async () => void (await requirePythonModule('slixmpp', 'python3-slixmpp')),
  mechanism: /^SCRAM-SHA-(1|256)-PLUS$/,
  start(srv, local, route, port) {
    const args = [SCRIPT, '--jid', `${local}@localhost`, '--password', srv.users.get(local) as string, '--port', String(port), '--ca', srv.trustAnchor, '--debug'];
    if (route.directTls) args.push('--direct-tls');
    return JsonLinesProcess.spawn(`slixmpp ${local}`, SYSTEM_PYTHON, args);
  },
});
