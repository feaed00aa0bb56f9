// `parley policy explain` (issue 9): the decision and the rule that decided, read offline from the
// configuration and the access control files; exit 0 allowed, 1 denied, 2 bad input. Without a
// question, every service and right, one line each (exit 0); rights may be named by their Sun IM names.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, tempConfig } from '../helpers/process.js';

describe('parley policy explain', () => {
  const { dir, config } = tempConfig(`acl:\n  directory: acl\n  watch: false\n  groups:\n    contractors: [carol@localhost]\n    staff: [alice@localhost]\n`);
  const acl = join(dir, 'acl');
  mkdirSync(join(acl, 'services'), { recursive: true });
  writeFileSync(join(acl, 'services', 'conferences.acl'), '# who may use rooms\nallow @staff\ndeny @contractors\nallow bob@localhost\n');
  writeFileSync(join(acl, 'rooms.acl'), 'allow @staff\n');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const explain = (...args: string[]) => runCli(['--config', config, 'policy', 'explain', ...args]);

  it('prints the deciding file, line, subject and group; exit code follows the decision', async () => {
    const [denied, byUser, byGroup, byDefault, right, absentRight, badJid, badQuestion, missing] = await Promise.all([
      explain('carol@localhost', 'conferences'),
      explain('bob@localhost/phone', 'conferences'),
      explain('alice@localhost', 'conferences'),
      explain('carol@localhost', 'news'),
      explain('bob@localhost', 'room.create'),
      explain('bob@localhost', 'poll.create'),
      explain('not a jid', 'conferences'),
      explain('alice@localhost', 'teleport'),
      explain(),
    ]);
    expect(denied).toMatchObject({ code: 1, stdout: 'carol@localhost: conferences DENIED by services/conferences.acl:3 (deny @contractors; carol is in group contractors)\n' });
    // A resource is ignored: rules are about accounts.
    expect(byUser).toMatchObject({ code: 0, stdout: 'bob@localhost: conferences ALLOWED by services/conferences.acl:4 (allow bob@localhost)\n' });
    expect(byGroup).toMatchObject({ code: 0, stdout: 'alice@localhost: conferences ALLOWED by services/conferences.acl:2 (allow @staff; alice is in group staff)\n' });
    expect(byDefault.code).toBe(0);
    expect(byDefault.stdout).toContain('news ALLOWED by no file: default');
    // The existing rights too: a file that does not name the user denies.
    expect(right.code).toBe(1);
    expect(right.stdout).toContain('bob@localhost: room.create DENIED by rooms.acl');
    expect(absentRight).toMatchObject({ code: 0 });
    expect(absentRight.stdout).toContain('poll.create ALLOWED by no file: default');
    for (const bad of [badJid, badQuestion, missing]) expect(bad.code).toBe(2);
    expect(badQuestion.stderr).toContain('unknown service or right "teleport"');
  }, 60_000);

  it('explains every service and right without a question, and accepts the Sun IM names of rights', async () => {
    const other = tempConfig(`acl:\n  directory: acl\n  watch: false\n  groups:\n    kiosks: [kiosk@localhost]\n`);
    try {
      const sunAcl = join(other.dir, 'acl');
      mkdirSync(sunAcl);
      writeFileSync(join(sunAcl, 'sysRoomsAdd.acl'), 'allow alice@localhost\n');
      writeFileSync(join(sunAcl, 'publish.acl'), 'deny @kiosks\nallow *@localhost\n');
      writeFileSync(join(sunAcl, 'sysSaveUserSettings.acl'), '# kiosks keep their settings\ndeny @kiosks\nallow *\n');
      const run = (...args: string[]) => runCli(['--config', other.config, 'policy', 'explain', ...args]);
      const [all, byAlias, byAliasDenied, byName, lower] = await Promise.all([
        run('kiosk@localhost'),
        run('alice@localhost', 'sysRoomsAdd'),
        run('kiosk@localhost', 'sysSaveUserSettings'),
        run('kiosk@localhost', 'settings.save'),
        run('kiosk@localhost', 'sysroomsadd'),
      ]);
      // Every entitlement and right, denied ones included, and still exit 0.
      expect(all.code).toBe(0);
      expect(all.stdout.split('\n').filter(Boolean)).toEqual([
        ...['chat', 'conferences', 'news', 'polls', 'filetransfer', 'federation', 'gateways'].map((s) => `kiosk@localhost: ${s} ALLOWED by no file: default (allowed for local accounts)`),
        'kiosk@localhost: room.create (sysRoomsAdd) DENIED by sysRoomsAdd.acl (no entry matches; a file denies whoever it does not name)',
        'kiosk@localhost: channel.create (sysTopicsAdd) ALLOWED by no file: default (allowed for local accounts)',
        'kiosk@localhost: channel.publish DENIED by publish.acl:1 (deny @kiosks; kiosk is in group kiosks)',
        'kiosk@localhost: alert.send (sysSendAlerts) DENIED by no file: default (denied for local accounts)',
        'kiosk@localhost: poll.create ALLOWED by no file: default (allowed for local accounts)',
        'kiosk@localhost: settings.save (sysSaveUserSettings) DENIED by sysSaveUserSettings.acl:2 (deny @kiosks; kiosk is in group kiosks)',
        'kiosk@localhost: admin (sysAdmin) DENIED by no file: default (denied for local accounts)',
      ]);
      expect(byAlias).toMatchObject({ code: 0, stdout: 'alice@localhost: sysRoomsAdd (room.create) ALLOWED by sysRoomsAdd.acl:1 (allow alice@localhost)\n' });
      expect(byAliasDenied).toMatchObject({ code: 1, stdout: 'kiosk@localhost: sysSaveUserSettings (settings.save) DENIED by sysSaveUserSettings.acl:2 (deny @kiosks; kiosk is in group kiosks)\n' });
      // The same question by its Parley name: the same decision, the one-question format.
      expect(byName).toMatchObject({ code: 1, stdout: 'kiosk@localhost: settings.save DENIED by sysSaveUserSettings.acl:2 (deny @kiosks; kiosk is in group kiosks)\n' });
      expect(lower.code).toBe(1);
      expect(lower.stdout).toContain('kiosk@localhost: sysRoomsAdd (room.create) DENIED by sysRoomsAdd.acl');
    } finally {
      rmSync(other.dir, { recursive: true, force: true });
    }
  }, 60_000);
});
