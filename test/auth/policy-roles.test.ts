// Policy roles (issue 9, docs/acl.md): the rights channel.publish (publish.acl) and settings.save
// (settings.acl), their defaults without a file, and the Sun IM privilege names accepted as aliases:
// as file names (sysAdmin.acl, sysRoomsAdd.acl, sysTopicsAdd.acl, sysSendAlerts.acl,
// sysSaveUserSettings.acl), where a file and its alias together are a load error naming both, and
// as names of rights (rightByName, used by `parley policy explain`).
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AclLoadError, FileAccessControl, SERVICE_FILES, SUN_SERVICE_FILES } from '../../src/auth/policy/index.js';
import { DefaultAccessControl, formatRule, rightByName, SERVICE_RIGHTS } from '../../src/core/acl.js';
import { Jid } from '../../src/xmpp/jid.js';

const J = (s: string) => Jid.parse(s);
const isLocal = (d: string) => d === 'example.com';

describe('policy roles', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function aclDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), 'parley-roles-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  }

  it('without a file local accounts may publish to channels and save their settings, nobody else', async () => {
    const d = new DefaultAccessControl(isLocal);
    for (const r of ['channel.publish', 'settings.save'] as const) {
      expect(d.allows(r, J('alice@example.com/phone'))).toBe(true);
      expect(d.allows(r, J('eve@elsewhere.example'))).toBe(false);
      expect(d.allows(r, J('example.com'))).toBe(false);
      expect(formatRule(d.explain(r, J('alice@example.com')))).toBe('no file: default (allowed for local accounts)');
    }
    // An empty directory: the same defaults through the file engine.
    const acl = new FileAccessControl({ directory: aclDir({}), isLocal });
    await acl.start();
    expect(acl.allows('channel.publish', J('alice@example.com'))).toBe(true);
    expect(acl.allows('settings.save', J('alice@example.com'))).toBe(true);
    expect(acl.allows('settings.save', J('eve@elsewhere.example'))).toBe(false);
  });

  it('publish.acl and settings.acl decide most specific first; administrators keep every right', async () => {
    const dir = aclDir({
      'publish.acl': '# communications publishes, interns do not\nallow @communications\ndeny @interns\nallow *@example.com\ndeny ivan@example.com\n',
      'settings.acl': 'deny kiosk@example.com\nallow *\n',
      'admins.acl': 'allow root@example.com\n',
    });
    const acl = new FileAccessControl({ directory: dir, isLocal, groups: { communications: ['carol@example.com'], interns: ['ian@example.com', 'carol@example.com'] } });
    const report = await acl.start();
    expect(report.files.map((f) => [f.file, f.status])).toEqual([
      ['admins.acl', 'loaded'],
      ['publish.acl', 'loaded'],
      ['settings.acl', 'loaded'],
    ]);
    expect(acl.allows('channel.publish', J('bob@example.com'))).toBe(true);
    // In both groups: the refusal wins within the group level, and groups beat the domain.
    expect(acl.allows('channel.publish', J('carol@example.com'))).toBe(false);
    expect(acl.allows('channel.publish', J('ian@example.com'))).toBe(false);
    expect(acl.allows('channel.publish', J('ivan@example.com'))).toBe(false);
    // The file names nobody of other domains.
    expect(acl.allows('channel.publish', J('eve@partner.example'))).toBe(false);
    expect(formatRule(acl.explain('channel.publish', J('ian@example.com')))).toBe('publish.acl:3 (deny @interns; ian is in group interns)');
    expect(formatRule(acl.explain('channel.publish', J('ivan@example.com')))).toBe('publish.acl:5 (deny ivan@example.com)');

    expect(acl.allows('settings.save', J('kiosk@example.com'))).toBe(false);
    expect(acl.allows('settings.save', J('bob@example.com'))).toBe(true);
    expect(acl.explain('settings.save', J('kiosk@example.com'))).toEqual({ allowed: false, file: 'settings.acl', line: 1, rule: 'deny kiosk@example.com' });
    // The other rights keep their defaults.
    expect(acl.allows('channel.create', J('ivan@example.com'))).toBe(true);

    // Not named by publish.acl, but an administrator.
    expect(acl.allows('channel.publish', J('root@example.com'))).toBe(true);
    const root = acl.explain('channel.publish', J('root@example.com'));
    expect(root).toMatchObject({ allowed: true, file: 'admins.acl', line: 1 });
    expect(root.via).toContain('administrators hold every right');
  });

  it('accepts the Sun IM file names for the rights they governed, and explain names the file', async () => {
    expect(SUN_SERVICE_FILES).toEqual({
      'sysRoomsAdd.acl': 'room.create',
      'sysTopicsAdd.acl': 'channel.create',
      'sysSendAlerts.acl': 'alert.send',
      'sysSaveUserSettings.acl': 'settings.save',
      'sysAdmin.acl': 'admin',
    });
    const dir = aclDir({
      'sysRoomsAdd.acl': 'allow alice@example.com\n',
      'sysTopicsAdd.acl': 'allow @editors\n',
      'sysSendAlerts.acl': 'allow ops@example.com\n',
      'sysSaveUserSettings.acl': 'deny kiosk@example.com\nallow *@example.com\n',
      'sysAdmin.acl': '# the administrator\nallow root@example.com\n',
    });
    const acl = new FileAccessControl({ directory: dir, isLocal, groups: { editors: ['ed@example.com'] } });
    const report = await acl.start();
    expect(report.errors).toEqual([]);
    expect(report.warnings).toEqual([]);
    expect(report.files.every((f) => f.status === 'loaded')).toBe(true);

    expect(acl.allows('room.create', J('alice@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(false);
    expect(formatRule(acl.explain('room.create', J('alice@example.com')))).toBe('sysRoomsAdd.acl:1 (allow alice@example.com)');
    expect(formatRule(acl.explain('room.create', J('bob@example.com')))).toBe('sysRoomsAdd.acl (no entry matches; a file denies whoever it does not name)');
    expect(acl.allows('channel.create', J('ed@example.com'))).toBe(true);
    expect(acl.allows('channel.create', J('bob@example.com'))).toBe(false);
    expect(formatRule(acl.explain('channel.create', J('ed@example.com')))).toBe('sysTopicsAdd.acl:1 (allow @editors; ed is in group editors)');
    expect(acl.allows('alert.send', J('ops@example.com'))).toBe(true);
    expect(acl.allows('alert.send', J('bob@example.com'))).toBe(false);
    expect(acl.allows('settings.save', J('kiosk@example.com'))).toBe(false);
    expect(acl.allows('settings.save', J('bob@example.com'))).toBe(true);
    expect(formatRule(acl.explain('settings.save', J('kiosk@example.com')))).toBe('sysSaveUserSettings.acl:1 (deny kiosk@example.com)');
    // sysAdmin.acl makes administrators, who hold every right whatever the other files say.
    expect(acl.allows('admin', J('root@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('root@example.com'))).toBe(true);
    expect(acl.venue('room', 'x@conference.example.com', J('root@example.com'))).toBeNull();
    expect(formatRule(acl.explain('settings.save', J('root@example.com')))).toBe('sysAdmin.acl:2 (allow root@example.com; administrators hold every right)');
  });

  it('a file and its Sun alias together: start fails naming both; on reload the Parley file alone governs', async () => {
    const both = aclDir({ 'rooms.acl': 'allow alice@example.com\n', 'sysRoomsAdd.acl': 'allow bob@example.com\n' });
    let err: unknown;
    try {
      await new FileAccessControl({ directory: both, isLocal }).start();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AclLoadError);
    expect((err as AclLoadError).problems).toEqual(['sysRoomsAdd.acl: rooms.acl and sysRoomsAdd.acl both govern room.create (sysRoomsAdd.acl is its Sun IM name); keep one of them']);

    // Only the Sun file at start; admins.acl and sysAdmin.acl conflict too, whatever they contain.
    const dir = aclDir({ 'sysRoomsAdd.acl': 'allow bob@example.com\n' });
    const acl = new FileAccessControl({ directory: dir, isLocal });
    await acl.start();
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);
    writeFileSync(join(dir, 'rooms.acl'), 'allow alice@example.com\n');
    writeFileSync(join(dir, 'admins.acl'), 'allow root@example.com\n');
    writeFileSync(join(dir, 'sysAdmin.acl'), 'not even valid\n');
    const report = await acl.reload();
    expect(report.errors).toEqual([
      'sysAdmin.acl: admins.acl and sysAdmin.acl both govern admin (sysAdmin.acl is its Sun IM name); keep one of them',
      'sysRoomsAdd.acl: rooms.acl and sysRoomsAdd.acl both govern room.create (sysRoomsAdd.acl is its Sun IM name); keep one of them',
    ]);
    // The Sun file is not kept in force, not even its previous version: no tie between two files.
    expect(report.files.map((f) => [f.file, f.status])).toEqual([
      ['admins.acl', 'loaded'],
      ['rooms.acl', 'loaded'],
      ['sysAdmin.acl', 'rejected'],
      ['sysRoomsAdd.acl', 'rejected'],
    ]);
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(false);
    expect(acl.allows('admin', J('root@example.com'))).toBe(true);
    expect(acl.explain('room.create', J('bob@example.com')).file).toBe('rooms.acl');

    // Without its Parley twin the Sun file governs again.
    unlinkSync(join(dir, 'rooms.acl'));
    expect((await acl.reload()).errors).toEqual([expect.stringMatching(/^sysAdmin\.acl: /)]);
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);
    expect(acl.allows('room.create', J('alice@example.com'))).toBe(false);
  });

  it('warns about sysWatch.acl specifically and lists the Sun names for unknown files', async () => {
    const acl = new FileAccessControl({ directory: aclDir({ 'sysWatch.acl': 'u:alice\n', 'notes.acl': 'allow *\n' }), isLocal });
    const report = await acl.start();
    expect(report.errors).toEqual([]);
    expect(report.warnings).toEqual([
      expect.stringMatching(/^notes\.acl: unknown file, ignored \(expected one of .*publish\.acl.*settings\.acl.* or their Sun IM names .*sysAdmin\.acl/),
      expect.stringMatching(/^sysWatch\.acl: Sun IM's privilege to watch other users' presence has no equivalent here/),
    ]);
  });

  it('names rights by their Parley or Sun names', () => {
    for (const r of SERVICE_RIGHTS) expect(rightByName(r)).toBe(r);
    expect(rightByName('sysRoomsAdd')).toBe('room.create');
    expect(rightByName('systopicsadd')).toBe('channel.create');
    expect(rightByName('sysSendAlerts')).toBe('alert.send');
    expect(rightByName('sysSaveUserSettings')).toBe('settings.save');
    expect(rightByName('SYSADMIN')).toBe('admin');
    expect(rightByName('sysWatch')).toBeUndefined();
    expect(rightByName('conferences')).toBeUndefined();
    expect(rightByName('teleport')).toBeUndefined();
    // Every right has a file of its own, and the Sun files name existing rights only.
    expect(new Set(Object.values(SERVICE_FILES))).toEqual(new Set(SERVICE_RIGHTS));
    expect(SERVICE_FILES['publish.acl']).toBe('channel.publish');
    expect(SERVICE_FILES['settings.acl']).toBe('settings.save');
  });
});
