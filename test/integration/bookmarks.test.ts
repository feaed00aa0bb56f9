// XEP-0402 bookmarks with XEP-0411 compatibility over real client connections: a XEP-0402 publish
// shows up in a XEP-0048 read through XEP-0049 private storage, a XEP-0048 write shows up as
// XEP-0402 items (and notifies +notify resources), removals retract, URL bookmarks survive, bad
// data is refused, and the account advertises urn:xmpp:bookmarks:1#compat.
import type { Element } from 'ltx';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type TestClient, xml } from '../helpers/client.js';
import { startTestServer, type TestServer, uniqueUser } from '../helpers/server.js';

const PUBSUB = 'http://jabber.org/protocol/pubsub';
const BOOKMARKS = 'urn:xmpp:bookmarks:1';
const LEGACY = 'storage:bookmarks';
const PRIVATE = 'jabber:iq:private';

const publishOptions = () =>
  xml(
    'publish-options',
    {},
    xml(
      'x',
      { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE', type: 'hidden' }, xml('value', {}, `${PUBSUB}#publish-options`)),
      xml('field', { var: 'pubsub#persist_items' }, xml('value', {}, 'true')),
      xml('field', { var: 'pubsub#max_items' }, xml('value', {}, 'max')),
      xml('field', { var: 'pubsub#send_last_published_item' }, xml('value', {}, 'never')),
      xml('field', { var: 'pubsub#access_model' }, xml('value', {}, 'whitelist')),
    ),
  );

const legacyGet = () => xml('iq', { type: 'get' }, xml('query', { xmlns: PRIVATE }, xml('storage', { xmlns: LEGACY })));
const legacySet = (...children: Element[]) => xml('iq', { type: 'set' }, xml('query', { xmlns: PRIVATE }, xml('storage', { xmlns: LEGACY }, ...children)));
const nativeItems = (to: string) => xml('iq', { type: 'get', to }, xml('pubsub', { xmlns: PUBSUB }, xml('items', { node: BOOKMARKS })));

function conferences(res: Element): Element[] {
  return res.getChild('query', PRIVATE)?.getChild('storage', LEGACY)?.getChildren('conference') ?? [];
}

describe('bookmarks (XEP-0402 + XEP-0411)', () => {
  let srv: TestServer;
  let port: number;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    srv = await startTestServer();
    port = srv.ports.c2s as number;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await srv?.close();
  });

  async function login(): Promise<{ c: TestClient; bare: string }> {
    const bare = await srv.addUser(uniqueUser('bm'));
    const c = await connect({ port, username: bare.split('@')[0] as string });
    clients.push(c);
    return { c, bare };
  }

  it('a XEP-0402 publish is visible to a XEP-0048 private-storage read', async () => {
    const { c, bare } = await login();
    await c.iq(
      xml(
        'iq',
        { type: 'set' },
        xml(
          'pubsub',
          { xmlns: PUBSUB },
          xml('publish', { node: BOOKMARKS }, xml('item', { id: 'theplay@conference.shakespeare.lit' }, xml('conference', { xmlns: BOOKMARKS, name: "The Play's the Thing", autojoin: 'true' }, xml('nick', {}, 'JC')))),
          publishOptions(),
        ),
      ),
    );
    const got = conferences(await c.iq(legacyGet()));
    expect(got).toHaveLength(1);
    expect(got[0]?.attrs).toMatchObject({ jid: 'theplay@conference.shakespeare.lit', name: "The Play's the Thing", autojoin: 'true' });
    expect(got[0]?.getChildText('nick')).toBe('JC');
    // The node got the XEP-0402 configuration: a contact-less stranger check is not needed, the owner reads it.
    const node = await srv.storage.pubsub.getNode(bare, BOOKMARKS);
    expect(node?.config['pubsub#access_model']).toBe('whitelist');
  });

  it('a XEP-0048 write becomes XEP-0402 items; removal retracts; URL bookmarks are kept', async () => {
    const { c, bare } = await login();
    await c.iq(
      legacySet(
        xml('conference', { jid: 'council@conference.example.org', name: 'Council', autojoin: '1' }, xml('nick', {}, 'Juliet'), xml('password', {}, 'pw')),
        xml('conference', { jid: 'lobby@conference.example.org', name: 'Lobby' }),
        xml('url', { name: 'Docs', url: 'https://example.org/docs' }),
      ),
    );
    const res = await c.iq(nativeItems(bare));
    const items = res.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item') ?? [];
    expect(items.map((i) => i.attrs.id).sort()).toEqual(['council@conference.example.org', 'lobby@conference.example.org']);
    const council = items.find((i) => i.attrs.id === 'council@conference.example.org')?.getChild('conference', BOOKMARKS);
    expect(council?.attrs).toMatchObject({ name: 'Council', autojoin: 'true' });
    expect(council?.getChildText('nick')).toBe('Juliet');
    expect(council?.getChildText('password')).toBe('pw');
    const lobby = items.find((i) => i.attrs.id === 'lobby@conference.example.org')?.getChild('conference', BOOKMARKS);
    expect(lobby?.attrs.autojoin).toBeUndefined();

    // Rewrite without the lobby: it is retracted; the URL and the other conference remain.
    await c.iq(legacySet(xml('conference', { jid: 'council@conference.example.org', name: 'Council', autojoin: 'true' }, xml('nick', {}, 'Juliet'), xml('password', {}, 'pw')), xml('url', { name: 'Docs', url: 'https://example.org/docs' })));
    const after = await c.iq(nativeItems(bare));
    expect(after.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id)).toEqual(['council@conference.example.org']);
    const read = await c.iq(legacyGet());
    expect(conferences(read).map((x) => x.attrs.jid)).toEqual(['council@conference.example.org']);
    expect(read.getChild('query', PRIVATE)?.getChild('storage', LEGACY)?.getChild('url')?.attrs.url).toBe('https://example.org/docs');
  });

  it('refuses a conference with an invalid JID, and advertises #compat on the account', async () => {
    const { c, bare } = await login();
    try {
      await c.iq(legacySet(xml('conference', { jid: 'bad@@jid' })));
      throw new Error('expected an error');
    } catch (e) {
      expect((e as { condition?: string }).condition).toBe('not-acceptable');
    }
    const info = await c.iq(xml('iq', { type: 'get', to: bare }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
    const vars = info.getChild('query')?.getChildren('feature').map((f) => f.attrs.var);
    expect(vars).toContain(`${BOOKMARKS}#compat`);
    // Empty storage reads back as an empty <storage/>.
    expect(conferences(await c.iq(legacyGet()))).toEqual([]);
  });
});
