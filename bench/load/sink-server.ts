// The no-op sink: a process that speaks just enough XMPP for the load generator's login (stream,
// SASL PLAIN accepted blindly, bind, empty roster) and then echoes every byte a client sends back
// to that client. The generator counts echoed chat messages as delivered, so a W3 run against it
// shows how many messages per second the generator itself can send, receive and time.
// Usage: node --import tsx bench/load/sink-server.ts <port> [domain]
import net from 'node:net';

const port = Number(process.argv[2]);
const domain = process.argv[3] ?? 'localhost';
const HEAD = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='${domain}' id='sink' version='1.0'>`;

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  let user = '';
  let bound = false;
  sock.on('data', (d) => {
    if (bound) {
      // Hot path: echo unless it is an iq (roster get) or the end of the stream.
      const s = d.toString('latin1', 0, Math.min(d.length, 64));
      if (!s.includes('<iq') && !d.includes('</stream:stream>')) {
        sock.write(d);
        return;
      }
    }
    const s = d.toString('utf8');
    let out = '';
    if (s.includes('<stream:stream')) {
      out += HEAD;
      out += user
        ? `<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`
        : `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>`;
    }
    const auth = /<auth[^>]*>([^<]*)<\/auth>/.exec(s);
    if (auth) {
      user = Buffer.from(auth[1] as string, 'base64').toString().split('\0')[1] || 'anon';
      out += `<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`;
    }
    for (const m of s.matchAll(/<iq[^>]*id=['"]([^'"]+)['"][^>]*>/g)) {
      const id = m[1] as string;
      if (s.includes('xmpp-bind')) {
        out += `<iq type='result' id='${id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>${user}@${domain}/sink</jid></bind></iq>`;
        bound = true;
      } else if (s.includes('jabber:iq:roster')) out += `<iq type='result' id='${id}'><query xmlns='jabber:iq:roster'/></iq>`;
      else out += `<iq type='result' id='${id}'/>`;
    }
    if (out) sock.write(out);
    if (s.includes('</stream:stream>')) sock.end('</stream:stream>');
  });
  sock.on('error', () => {});
});
server.listen(port, '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
