// Issue 5's checklist as a client sees it: the server's and the account's disco#info and the stream
// features list every modern-IM feature (XEP-0479 Advanced Server, Core + IM + Mobile).
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { RawClient } from '../helpers/raw.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const features = (q: Element) => q.getChildren('feature').map((f) => f.attrs.var as string);
const identities = (q: Element) => q.getChildren('identity').map((i) => `${i.attrs.category}/${i.attrs.type}`);

describe('advertised features', () => {
  let srv: TestServer;
  let c: TestClient;
  let user: string;

  beforeAll(async () => {
    srv = await startTestServer();
    user = uniqueUser('alice');
    await srv.addUser(user);
    c = await connect({ port: srv.ports.c2s as number, username: user });
  });
  afterAll(async () => {
    await c?.stop();
    await srv?.close();
  });

  it("the server's disco#info", async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const q = res.getChild('query') as Element;
    expect(identities(q)).toContain('server/im');
    expect(features(q)).toEqual(
      expect.arrayContaining([
        'urn:xmpp:carbons:2', // XEP-0280
        'urn:xmpp:extdisco:2', // XEP-0215
        'urn:xmpp:blocking', // XEP-0191
        'urn:xmpp:ping',
        'msgoffline', // XEP-0160
        'http://jabber.org/protocol/disco#info',
        'jabber:iq:version',
      ]),
    );
  });

  it("the account's disco#info", async () => {
    const res = await c.iq(xml('iq', { type: 'get', to: `${user}@localhost` }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const q = res.getChild('query') as Element;
    expect(identities(q)).toEqual(expect.arrayContaining(['account/registered', 'pubsub/pep']));
    expect(features(q)).toEqual(
      expect.arrayContaining([
        'urn:xmpp:mam:2', // XEP-0313
        'urn:xmpp:mam:2#extended',
        'urn:xmpp:push:0', // XEP-0357
        'http://jabber.org/protocol/pubsub#publish-options', // XEP-0163 / XEP-0060 (XEP-0223)
        'http://jabber.org/protocol/pubsub#access-whitelist',
        'urn:xmpp:bookmarks:1#compat', // XEP-0402 / XEP-0411
        'urn:xmpp:pep-vcard-conversion:0', // XEP-0398
        'vcard-temp', // XEP-0054 (XEP-0153)
      ]),
    );
  });

  it('the stream features after authentication', async () => {
    const raw = await RawClient.connect(srv.ports.c2s as number);
    const f = await raw.authenticate(user, 'secret-password');
    expect(f).toMatch(/<sm xmlns=['"]urn:xmpp:sm:3['"]/); // XEP-0198
    expect(f).toMatch(/<csi xmlns=['"]urn:xmpp:csi:0['"]/); // XEP-0352
    expect(f).toMatch(/<bind xmlns=['"]urn:ietf:params:xml:ns:xmpp-bind['"]/);
    raw.destroy();
  });
});
