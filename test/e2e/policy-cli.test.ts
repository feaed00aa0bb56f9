// `parley policy explain` (issue 9): the decision and the rule that decided, read offline from the
// configuration and the access control files; exit 0 allowed, 1 denied, 2 bad input.
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
      explain('alice@localhost'),
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
});
