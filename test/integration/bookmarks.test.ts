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

  // ---- migration of documents stored through XEP-0049 before the bridge -----------------------

  /** A XEP-0048 document as the private module stored it (store 'private', key = namespace). */
  const seedLegacy = (bare: string, body: string) =>
    srv.storage.keyval.set(bare, 'private', LEGACY, `<private xmlns='${PRIVATE}'><storage xmlns='${LEGACY}'>${body}</storage></private>`);
  const itemIds = (res: Element) => res.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').map((i) => i.attrs.id) ?? [];

  it('migrates a pre-bridge XEP-0048 document at login: XEP-0402 retrieval and XEP-0048 read both show it, once', async () => {
    const bare = await srv.addUser(uniqueUser('bmmig'));
    await seedLegacy(
      bare,
      "<conference jid='orchard@conference.example.org' name='Orchard' autojoin='true'><nick>Romeo</nick><password>rose</password></conference>" +
        "<conference jid='tomb@conference.example.org' name='Tomb'/>" +
        "<url name='Verona' url='https://verona.example/'/>",
    );
    const c = await connect({ port, username: bare.split('@')[0] as string });
    clients.push(c);

    const items = await c.iq(nativeItems(bare));
    expect(itemIds(items).sort()).toEqual(['orchard@conference.example.org', 'tomb@conference.example.org']);
    const orchard = items.getChild('pubsub', PUBSUB)?.getChild('items')?.getChildren('item').find((i) => i.attrs.id === 'orchard@conference.example.org')?.getChild('conference', BOOKMARKS);
    expect(orchard?.attrs).toMatchObject({ name: 'Orchard', autojoin: 'true' });
    expect(orchard?.getChildText('nick')).toBe('Romeo');
    expect(orchard?.getChildText('password')).toBe('rose');
    // Created with the XEP-0402 configuration (bookmarks are private).
    expect((await srv.storage.pubsub.getNode(bare, BOOKMARKS))?.config['pubsub#access_model']).toBe('whitelist');

    const read = await c.iq(legacyGet());
    expect(conferences(read).map((x) => x.attrs.jid).sort()).toEqual(['orchard@conference.example.org', 'tomb@conference.example.org']);
    expect(read.getChild('query', PRIVATE)?.getChild('storage', LEGACY)?.getChildren('url').map((u) => u.attrs.url)).toEqual(['https://verona.example/']);

    // Migrated once: the legacy copy is gone, and a second login changes nothing.
    expect(await srv.storage.keyval.get(bare, 'private', LEGACY)).toBeNull();
    const again = await connect({ port, username: bare.split('@')[0] as string });
    clients.push(again);
    expect(itemIds(await again.iq(nativeItems(bare))).sort()).toEqual(['orchard@conference.example.org', 'tomb@conference.example.org']);
    expect((await again.iq(legacyGet())).getChild('query', PRIVATE)?.getChild('storage', LEGACY)?.getChildren('url')).toHaveLength(1);
  });

  it('migrates on a XEP-0048 read for a session already online, keeping rooms the node already has', async () => {
    const { c, bare } = await login();
    // A XEP-0402 client already bookmarked one room; the legacy document names it differently.
    await c.iq(
      xml(
        'iq',
        { type: 'set' },
        xml('pubsub', { xmlns: PUBSUB }, xml('publish', { node: BOOKMARKS }, xml('item', { id: 'hall@conference.example.org' }, xml('conference', { xmlns: BOOKMARKS, name: 'Hall (new)' }))), publishOptions()),
      ),
    );
    await seedLegacy(bare, "<conference jid='hall@conference.example.org' name='Hall (old)'/><conference jid='balcony@conference.example.org' name='Balcony' autojoin='1'/>");

    const read = await c.iq(legacyGet());
    const byJid = new Map(conferences(read).map((x) => [x.attrs.jid, x]));
    expect([...byJid.keys()].sort()).toEqual(['balcony@conference.example.org', 'hall@conference.example.org']);
    expect(byJid.get('hall@conference.example.org')?.attrs.name).toBe('Hall (new)');
    expect(byJid.get('balcony@conference.example.org')?.attrs.autojoin).toBe('true');
    expect(itemIds(await c.iq(nativeItems(bare))).sort()).toEqual(['balcony@conference.example.org', 'hall@conference.example.org']);
    expect(await srv.storage.keyval.get(bare, 'private', LEGACY)).toBeNull();
  });

  it('a XEP-0048 write migrates first, so a room it leaves out is removed for good', async () => {
    const { c, bare } = await login();
    await seedLegacy(bare, "<conference jid='old@conference.example.org' name='Old'/><conference jid='kept@conference.example.org' name='Kept'/>");
    await c.iq(legacySet(xml('conference', { jid: 'kept@conference.example.org', name: 'Kept' })));
    expect(itemIds(await c.iq(nativeItems(bare)))).toEqual(['kept@conference.example.org']);
    expect(conferences(await c.iq(legacyGet())).map((x) => x.attrs.jid)).toEqual(['kept@conference.example.org']);
    expect(await srv.storage.keyval.get(bare, 'private', LEGACY)).toBeNull();
  });
});
