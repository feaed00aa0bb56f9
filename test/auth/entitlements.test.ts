// Service entitlements (issue 9, docs/acl.md): services/<service>.acl files, their resolution with
// the same rules as the other service files (user, then groups, then domain, then everyone), the
// default without a file (local accounts), reload, and explain() naming file, line and subject.
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FileAccessControl } from '../../src/auth/policy/index.js';
import { DefaultAccessControl, formatRule } from '../../src/core/acl.js';
import { Jid } from '../../src/xmpp/jid.js';

const J = (s: string) => Jid.parse(s);
const isLocal = (d: string) => d === 'example.com';

describe('service entitlements', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function aclDir(files: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), 'parley-ent-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'services'));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    return dir;
  }

  it('without a file every local account is entitled, and nobody else', () => {
    const d = new DefaultAccessControl(isLocal);
    expect(d.entitled('conferences', J('alice@example.com'))).toBe(true);
    expect(d.entitled('conferences', J('eve@elsewhere.example'))).toBe(false);
    expect(d.entitled('conferences', J('example.com'))).toBe(false);
    expect(formatRule(d.explain('chat', J('alice@example.com')))).toBe('no file: default (allowed for local accounts)');
  });

  it('resolves services/*.acl most specific first and explains with file:line', async () => {
    const dir = aclDir({
      'services/conferences.acl': '# rooms for staff, not contractors\nallow @staff\ndeny @contractors\nallow dave@example.com\n',
      'services/filetransfer.acl': 'deny *@example.com\nallow *\n',
    });
    const acl = new FileAccessControl({ directory: dir, isLocal, groups: { staff: ['alice@example.com', 'carol@example.com'], contractors: ['carol@example.com', 'dave@example.com'] } });
    const report = await acl.start();
    expect(report.files.map((f) => [f.file, f.status, f.rules])).toEqual([
      ['services/conferences.acl', 'loaded', 3],
      ['services/filetransfer.acl', 'loaded', 2],
    ]);
    expect(acl.entitled('conferences', J('alice@example.com/phone'))).toBe(true);
    // In both groups: an explicit refusal wins within one level.
    expect(acl.entitled('conferences', J('carol@example.com'))).toBe(false);
    // Named as a user: beats the group.
    expect(acl.entitled('conferences', J('dave@example.com'))).toBe(true);
    // A file denies whoever it does not name.
    expect(acl.entitled('conferences', J('bob@example.com'))).toBe(false);
    // The domain entry is more specific than "*".
    expect(acl.entitled('filetransfer', J('bob@example.com'))).toBe(false);
    expect(acl.entitled('filetransfer', J('eve@partner.example'))).toBe(true);
    // No file for chat: the default.
    expect(acl.entitled('chat', J('bob@example.com'))).toBe(true);
    // Entitlements and rights are separate: room.create has no file, so it is the default.
    expect(acl.allows('room.create', J('bob@example.com'))).toBe(true);

    expect(acl.explain('conferences', J('carol@example.com'))).toEqual({ allowed: false, file: 'services/conferences.acl', line: 3, rule: 'deny @contractors', via: 'carol is in group contractors' });
    expect(formatRule(acl.explain('conferences', J('alice@example.com')))).toBe('services/conferences.acl:2 (allow @staff; alice is in group staff)');
    expect(formatRule(acl.explain('conferences', J('dave@example.com')))).toBe('services/conferences.acl:4 (allow dave@example.com)');
    expect(formatRule(acl.explain('filetransfer', J('eve@partner.example')))).toBe('services/filetransfer.acl:2 (allow *; everyone)');
    expect(formatRule(acl.explain('conferences', J('bob@example.com')))).toBe('services/conferences.acl (no entry matches; a file denies whoever it does not name)');
    expect(acl.explain('news', J('bob@example.com'))).toEqual({ allowed: true, rule: 'no file: default (allowed for local accounts)' });
  });

  it('explains the existing rights too, administrators included', async () => {
    const dir = aclDir({ 'rooms.acl': 'deny *\n', 'admins.acl': '\nallow @ops\n' });
    const acl = new FileAccessControl({ directory: dir, isLocal, groups: { ops: ['root@example.com'] } });
    await acl.start();
    expect(formatRule(acl.explain('room.create', J('bob@example.com')))).toBe('rooms.acl:1 (deny *; everyone)');
    const root = acl.explain('room.create', J('root@example.com'));
    expect(root).toMatchObject({ allowed: true, file: 'admins.acl', line: 2 });
    expect(root.via).toContain('administrators hold every right');
  });

  it('uses directory groups, warns about unknown service files, and reloads', async () => {
    const dir = aclDir({ 'services/conferences.acl': 'allow @Engineering\n', 'services/teleport.acl': 'allow *\n' });
    const acl = new FileAccessControl({ directory: dir, isLocal, groupResolver: (who) => (who.bare === 'erin@example.com' ? ['engineering'] : undefined) });
    const first = await acl.start();
    expect(first.warnings).toContain('services/teleport.acl: unknown service, ignored (expected one of chat.acl, conferences.acl, news.acl, polls.acl, filetransfer.acl, federation.acl, gateways.acl)');
    expect(acl.entitled('conferences', J('erin@example.com'))).toBe(true);
    expect(acl.explain('conferences', J('erin@example.com')).via).toBe('erin is in group engineering (directory or identity provider)');
    expect(acl.entitled('conferences', J('bob@example.com'))).toBe(false);

    writeFileSync(join(dir, 'services/conferences.acl'), 'allow @engineering\nallow bob@example.com\nallow bob@example.com/x\n');
    const bad = await acl.reload();
    // Malformed: the previous rules stay, and the error names file and line.
    expect(bad.errors).toEqual([expect.stringMatching(/^services\/conferences\.acl:3: /)]);
    expect(acl.entitled('conferences', J('bob@example.com'))).toBe(false);

    writeFileSync(join(dir, 'services/conferences.acl'), 'allow @engineering\nallow bob@example.com\n');
    await acl.reload();
    expect(acl.entitled('conferences', J('bob@example.com'))).toBe(true);
    unlinkSync(join(dir, 'services/conferences.acl'));
    await acl.reload();
    // Removed: back to the default.
    expect(acl.entitled('conferences', J('eve@other.example'))).toBe(false);
    expect(acl.entitled('conferences', J('zoe@example.com'))).toBe(true);
  });

  it('reloads on change inside services/', async () => {
    const dir = aclDir({});
    const acl = new FileAccessControl({ directory: dir, isLocal, debounceMs: 20 });
    await acl.start();
    acl.watch();
    try {
      const reloaded = new Promise<void>((resolve) => {
        const off = acl.onReload(() => {
          off();
          resolve();
        });
      });
      writeFileSync(join(dir, 'services/chat.acl'), 'deny bob@example.com\nallow *\n');
      await reloaded;
      expect(acl.entitled('chat', J('bob@example.com'))).toBe(false);
      expect(acl.entitled('chat', J('alice@example.com'))).toBe(true);
    } finally {
      acl.close();
    }
  });
});
