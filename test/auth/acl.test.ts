// Access control files (issue 7, docs/acl.md): parser, rule resolution, per-file reload that keeps
// the previous rules of a malformed file, automatic reload on change, groups from configuration.
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AclLoadError, AclSyntaxError, FileAccessControl, parseAclFile, type AclReloadReport } from '../../src/auth/policy/index.js';
import { validateConfig } from '../../src/core/config.js';
import { Jid } from '../../src/xmpp/jid.js';

const J = (s: string) => Jid.parse(s);
const isLocal = (d: string) => d === 'example.com';

describe('ACL file parser', () => {
  it('reads users, groups, domains, everyone, deny entries and comments', () => {
    const text = [
      '# who may create rooms',
      '',
      'allow alice@example.com        # a user',
      'ALLOW @Staff, *@partner.example  # a group and a whole domain',
      'deny  mallory@example.com',
      '  allow c#sharp@example.com    # "#" inside a localpart is not a comment',
      'deny *',
    ].join('\r\n');
    const f = parseAclFile('rooms.acl', text, 'service');
    expect(f.entries.map((e) => [e.grant, e.subject, e.line])).toEqual([
      ['allow', { kind: 'user', jid: 'alice@example.com' }, 3],
      ['allow', { kind: 'group', name: 'staff' }, 4],
      ['allow', { kind: 'domain', domain: 'partner.example' }, 4],
      ['deny', { kind: 'user', jid: 'mallory@example.com' }, 5],
      ['allow', { kind: 'user', jid: 'c#sharp@example.com' }, 6],
      ['deny', { kind: 'everyone' }, 7],
    ]);
    expect(f.groups).toEqual(['staff']);
  });

  it('reads venue rights in any case and normalizes JIDs', () => {
    const f = parseAclFile('rooms/team.acl', 'manage Alice@Example.COM\nWrite @staff\nread *@example.com\nNONE *\n', 'venue');
    expect(f.entries.map((e) => e.grant)).toEqual(['MANAGE', 'WRITE', 'READ', 'NONE']);
    expect(f.entries[0]?.subject).toEqual({ kind: 'user', jid: 'alice@example.com' });
  });

  const bad: [string, 'service' | 'venue', string, RegExp][] = [
    ['rooms.acl', 'service', '# ok\nalow alice@example.com\n', /^rooms\.acl:2: expected "allow" or "deny" at the start of the line, found "alow"$/],
    ['rooms.acl', 'service', 'allow\n', /^rooms\.acl:1: expected at least one subject after "allow"/],
    ['rooms.acl', 'service', 'allow alice@example.com/phone', /^rooms\.acl:1: .*expected a bare JID/],
    ['rooms.acl', 'service', '\n\nallow example.com', /^rooms\.acl:3: .*expected user@domain; write "\*@example\.com"/],
    ['rooms.acl', 'service', 'allow al*ce@example.com', /^rooms\.acl:1: .*only allowed alone/],
    ['rooms.acl', 'service', 'allow @bad/group', /^rooms\.acl:1: invalid group name/],
    ['rooms.acl', 'service', 'allow a b@example.com', /^rooms\.acl:1: .*expected user@domain/],
    ['rooms.acl', 'service', 'allow alice@example.com\ndeny Alice@example.com', /^rooms\.acl:2: alice@example\.com is already listed at line 1$/],
    ['rooms/x.acl', 'venue', 'allow alice@example.com', /^rooms\/x\.acl:1: expected MANAGE, WRITE, READ or NONE at the start of the line, found "allow"$/],
    ['channels/n.acl', 'venue', 'READ *\nWRITE *', /^channels\/n\.acl:2: \* is already listed at line 1$/],
  ];
  it.each(bad)('%s (%s) rejects %j with file and line', (name, kind, text, re) => {
    let err: unknown;
    try {
      parseAclFile(name, text, kind);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AclSyntaxError);
    expect((err as Error).message).toMatch(re);
  });
});

describe('FileAccessControl', () => {
  let dir = '';
  const acls: FileAccessControl[] = [];
  afterEach(() => {
    for (const a of acls.splice(0)) a.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  function write(files: Record<string, string>): void {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
  }

  async function open(files: Record<string, string>, groups: Record<string, string[]> = {}, debounceMs = 50): Promise<FileAccessControl> {
    dir = mkdtempSync(join(tmpdir(), 'parley-acl-'));
    write(files);
    const acl = new FileAccessControl({ directory: dir, groups, isLocal, debounceMs });
    acls.push(acl);
    await acl.start();
    return acl;
  }

  it('without files behaves like the defaults', async () => {
    const acl = await open({});
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('eve@remote.example'))).toBe(false);
    expect(acl.allows('alert.send', J('alice@example.com'))).toBe(false);
    expect(acl.allows('admin', J('alice@example.com'))).toBe(false);
    expect(acl.venue('room', 'team@conference.example.com', J('alice@example.com'))).toBeNull();
    expect(acl.lastReport()?.files).toEqual([]);
  });

  it('also when the directory does not exist (with a warning)', async () => {
    const acl = new FileAccessControl({ directory: join(tmpdir(), 'parley-acl-missing-dir-x'), isLocal });
    const report = await acl.start();
    expect(report.warnings.join()).toMatch(/does not exist/);
    expect(acl.allows('poll.create', J('alice@example.com'))).toBe(true);
  });

  const rights = [
    ['rooms.acl', 'room.create'],
    ['channels.acl', 'channel.create'],
    ['alerts.acl', 'alert.send'],
    ['polls.acl', 'poll.create'],
    ['admins.acl', 'admin'],
  ] as const;
  it.each(rights)('%s grants %s to the listed user and refuses the others', async (file, right) => {
    const acl = await open({ [file]: 'allow boss@example.com\n' });
    expect(acl.allows(right, J('boss@example.com/desk'))).toBe(true);
    expect(acl.allows(right, J('alice@example.com'))).toBe(false);
    expect(acl.allows(right, J('boss@remote.example'))).toBe(false);
    // The other rights keep their defaults.
    const other = right === 'room.create' ? 'poll.create' : 'room.create';
    expect(acl.allows(other, J('alice@example.com'))).toBe(true);
    expect(acl.lastReport()?.files).toEqual([{ file, rules: 1, status: 'loaded' }]);
  });

  it('an empty (comments only) file refuses everyone', async () => {
    const acl = await open({ 'rooms.acl': '# nobody creates rooms\n' });
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(false);
  });

  it('administrators hold every right and MANAGE on governed venues', async () => {
    const acl = await open({
      'admins.acl': 'allow root@example.com',
      'rooms.acl': 'deny *',
      'rooms/team@conference.example.com.acl': 'NONE *',
    });
    const root = J('root@example.com');
    for (const r of ['room.create', 'channel.create', 'alert.send', 'poll.create', 'admin'] as const) expect(acl.allows(r, root)).toBe(true);
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(false);
    expect(acl.venue('room', 'team@conference.example.com', root)).toBe('MANAGE');
    expect(acl.venue('room', 'other@conference.example.com', root)).toBeNull();
  });

  it('resolves per-venue MANAGE, WRITE, READ and NONE', async () => {
    const acl = await open(
      {
        'rooms/team@conference.example.com.acl': 'MANAGE owner@example.com\nWRITE @staff\nREAD *@example.com\nNONE intern@example.com\n',
        'channels/news.acl': 'MANAGE editor@example.com\nREAD *\n',
        'channels/a%2Fb.acl': 'WRITE alice@example.com\n',
      },
      { staff: ['bob@example.com'] },
    );
    const room = (who: string) => acl.venue('room', 'team@conference.example.com', J(who));
    expect(room('owner@example.com')).toBe('MANAGE');
    expect(room('bob@example.com/laptop')).toBe('WRITE');
    expect(room('alice@example.com')).toBe('READ');
    expect(room('intern@example.com')).toBe('NONE');
    expect(room('eve@remote.example')).toBe('NONE'); // governed, not named: nothing
    expect(acl.venue('room', 'Team@Conference.Example.com', J('bob@example.com'))).toBe('WRITE');
    expect(acl.venue('room', 'other@conference.example.com', J('owner@example.com'))).toBeNull();
    expect(acl.venue('channel', 'news', J('editor@example.com'))).toBe('MANAGE');
    expect(acl.venue('channel', 'news', J('eve@remote.example'))).toBe('READ');
    expect(acl.venue('channel', 'news@news.example.com', J('editor@example.com'))).toBe('MANAGE');
    expect(acl.venue('channel', 'a/b', J('alice@example.com'))).toBe('WRITE');
    expect(acl.venue('channel', 'sport', J('editor@example.com'))).toBeNull();
  });

  it('a room file without a service governs that room name on every service; the exact file wins', async () => {
    const acl = await open({
      'rooms/lobby.acl': 'READ *',
      'rooms/lobby@conference.example.com.acl': 'WRITE *',
    });
    expect(acl.venue('room', 'lobby@conference.example.com', J('a@example.com'))).toBe('WRITE');
    expect(acl.venue('room', 'lobby@muc.other.example', J('a@example.com'))).toBe('READ');
  });

  it('applies the most specific match: user, then groups, then domain, then everyone', async () => {
    const acl = await open(
      {
        'alerts.acl': 'allow *\ndeny *@example.com\nallow @ops\ndeny @contractors\nallow carol@example.com\n',
        'rooms/r@conference.example.com.acl': 'READ *\nWRITE @staff\nMANAGE @leads\nNONE @banned\n',
      },
      { ops: ['alice@example.com', 'bob@example.com'], contractors: ['bob@example.com', 'carol@example.com'], staff: ['s@example.com', 'l@example.com'], leads: ['l@example.com'], Banned: ['b@example.com', 'l2@example.com'], Leads: ['l2@example.com'] },
    );
    expect(acl.allows('alert.send', J('alice@example.com'))).toBe(true); // group beats domain
    expect(acl.allows('alert.send', J('bob@example.com'))).toBe(false); // within groups, deny wins
    expect(acl.allows('alert.send', J('carol@example.com'))).toBe(true); // user beats groups
    expect(acl.allows('alert.send', J('dave@example.com'))).toBe(false); // domain beats everyone
    expect(acl.allows('alert.send', J('eve@remote.example'))).toBe(true); // everyone
    expect(acl.allows('alert.send', J('remote.example'))).toBe(false); // wildcards name users, not servers
    const r = (who: string) => acl.venue('room', 'r@conference.example.com', J(who));
    expect(r('l@example.com')).toBe('MANAGE'); // the strongest of the groups
    expect(r('s@example.com')).toBe('WRITE');
    expect(r('l2@example.com')).toBe('NONE'); // NONE among the groups wins (group names are case-insensitive)
    expect(r('x@example.com')).toBe('READ');
  });

  it('refuses to start on a malformed file, naming file and line', async () => {
    await expect(open({ 'rooms.acl': 'allow a@example.com\nallow b@example.com c@\n' })).rejects.toThrow(AclLoadError);
    await expect(new FileAccessControl({ directory: dir, isLocal }).start()).rejects.toThrow(/rooms\.acl:2: invalid JID "c@"/);
  });

  it('on reload, a malformed file keeps its previous rules and the other files are applied', async () => {
    const acl = await open({ 'rooms.acl': 'allow alice@example.com\n', 'polls.acl': 'allow alice@example.com\n' });
    write({ 'rooms.acl': 'allow bob@example.com\nallow: carol@example.com\n', 'polls.acl': 'allow bob@example.com\n', 'rooms/x.acl': 'WRIT *\n' });
    const report = await acl.reload();
    expect(report.errors).toEqual([
      'rooms.acl:2: expected "allow" or "deny" at the start of the line, found "allow:"',
      'rooms/x.acl:1: expected MANAGE, WRITE, READ or NONE at the start of the line, found "WRIT"',
    ]);
    expect(report.files).toEqual([
      { file: 'polls.acl', rules: 1, status: 'loaded' },
      { file: 'rooms.acl', rules: 1, status: 'kept', error: report.errors[0] },
      { file: 'rooms/x.acl', rules: 0, status: 'rejected', error: report.errors[1] },
    ]);
    // rooms.acl: the old rules; polls.acl: the new ones; rooms/x.acl never loaded: not governed.
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(false);
    expect(acl.allows('poll.create', J('alice@example.com'))).toBe(false);
    expect(acl.allows('poll.create', J('bob@example.com'))).toBe(true);
    expect(acl.venue('room', 'x@conference.example.com', J('bob@example.com'))).toBeNull();

    // Fixed: the new rules apply. Deleted: the defaults come back.
    write({ 'rooms.acl': 'allow bob@example.com\n', 'rooms/x.acl': 'WRITE *\n' });
    expect((await acl.reload()).errors).toEqual([]);
    expect(acl.venue('room', 'x@conference.example.com', J('bob@example.com'))).toBe('WRITE');
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(false);
    unlinkSync(join(dir, 'rooms.acl'));
    const after = await acl.reload();
    expect(after.files.find((f) => f.file === 'rooms.acl')).toEqual({ file: 'rooms.acl', rules: 0, status: 'removed' });
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(true);
  });

  it('reports bad venue file names and two files for one room', async () => {
    const acl = await open({});
    write({ 'rooms/a b@conference.example.com.acl': 'READ *', 'rooms/x@conf.example.acl': 'READ *', 'rooms/X@Conf.example.acl': 'WRITE *', 'notes.acl': 'allow *', 'rooms.acl~': 'junk' });
    const report = await acl.reload();
    expect(report.errors.join('\n')).toMatch(/rooms\/a b@conference\.example\.com\.acl: file name: invalid room name/);
    expect(report.errors.join('\n')).toMatch(/rooms\/x@conf\.example\.acl: governs the same venue as rooms\/X@Conf\.example\.acl/);
    expect(report.warnings.join('\n')).toMatch(/notes\.acl: unknown file, ignored/);
    expect(acl.venue('room', 'x@conf.example', J('a@example.com'))).toBe('WRITE');
  });

  it('warns about groups nobody defined', async () => {
    const acl = await open({ 'alerts.acl': 'allow @ghosts' }, { staff: ['a@example.com'] });
    expect(acl.lastReport()?.warnings).toEqual(['alerts.acl: group @ghosts is not defined (acl.groups): it matches nobody']);
  });

  it('serializes overlapping reloads; each caller sees a reload that started after its request', async () => {
    const acl = await open({ 'rooms.acl': 'allow a@example.com' });
    const [r1, r2, r3] = await Promise.all([acl.reload(), acl.reload(), acl.reload()]);
    expect(r1.generation).toBe(2);
    expect(r2.generation).toBe(3);
    expect(r3).toBe(r2);
  });

  it('reloads by itself when a file changes (fs.watch), also in a rooms/ created later', async () => {
    const acl = await open({ 'rooms.acl': 'allow alice@example.com\n' });
    acl.watch();
    const next = () => new Promise<AclReloadReport>((resolve) => {
      const off = acl.onReload((r) => {
        off();
        resolve(r);
      });
    });
    let reloaded = next();
    writeFileSync(join(dir, 'rooms.acl'), 'allow bob@example.com\n');
    let report = await reloaded;
    expect(report.reason).toBe('change');
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(false);

    // A malformed save is reported; the rules stay.
    reloaded = next();
    writeFileSync(join(dir, 'rooms.acl'), 'allow bob@example.com\nmaybe carol@example.com\n');
    report = await reloaded;
    expect(report.errors).toEqual(['rooms.acl:2: expected "allow" or "deny" at the start of the line, found "maybe"']);
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);

    reloaded = next();
    mkdirSync(join(dir, 'rooms'));
    await reloaded;
    // Wait for the reload that sees the file itself (the directory event may come first).
    const seen = new Promise<void>((resolve) => {
      const off = acl.onReload(() => {
        if (acl.venue('room', 'team@conference.example.com', J('x@example.com')) === 'READ') {
          off();
          resolve();
        }
      });
    });
    writeFileSync(join(dir, 'rooms', 'team@conference.example.com.acl'), 'READ *\n');
    await seen;
  });
});

describe('acl configuration', () => {
  it('defaults the directory to <config dir>/acl, watches, and has no groups', () => {
    const c = validateConfig({}, '/etc/parley');
    expect(c.acl).toEqual({ directory: '/etc/parley/acl', watch: true, groups: {} });
    expect(validateConfig({ acl: { directory: '/srv/acl' } }, '/etc/parley').acl.directory).toBe('/srv/acl');
  });

  it('refuses group members that are not bare user JIDs, and bad group names', () => {
    expect(() => validateConfig({ acl: { groups: { staff: ['example.com'] } } })).toThrow(/acl\.groups\.staff\.0: expected a bare user JID/);
    expect(() => validateConfig({ acl: { groups: { staff: ['a@example.com/r'] } } })).toThrow(/acl\.groups\.staff\.0/);
    expect(() => validateConfig({ acl: { groups: { 'no way': ['a@example.com'] } } })).toThrow(/acl\.groups/);
  });

  it('group membership comes from acl.groups', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'parley-acl-'));
    try {
      writeFileSync(join(dir, 'alerts.acl'), 'allow @ops\n');
      const c = validateConfig({ acl: { directory: dir, groups: { ops: ['Alice@example.com'] } } });
      const acl = new FileAccessControl({ directory: c.acl.directory, groups: c.acl.groups, isLocal });
      await acl.start();
      expect(acl.allows('alert.send', J('alice@example.com/x'))).toBe(true);
      expect(acl.allows('alert.send', J('bob@example.com'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
