// Issue 15 §4: `parley user add` / `user passwd` typed at a terminal do not show the password. The
// CLI runs on a real pseudo-terminal (util-linux `script`), so the terminal's own echo would put
// the characters into what the test reads, exactly as it would on a screen. Scripts keep working:
// a pipe (first line) and $PARLEY_PASSWORD.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../helpers/client.js';
import { PARLEY_BIN, runCli, startServerProcess, tempConfig, waitExit } from '../helpers/process.js';

process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

/**
 * Runs the CLI on a pseudo-terminal and types `answers` one by one, each after the prompt matching
 * it appeared (typing earlier would be echoed by the terminal before the CLI turned echo off,
 * which is not what a person at a keyboard sees). Resolves the exit code and the whole screen.
 */
function onTerminal(args: string[], answers: { after: RegExp; type: string }[]): Promise<{ code: number | null; screen: string }> {
  return new Promise((resolve, reject) => {
    const cmd = [PARLEY_BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PARLEY_PASSWORD: '' } });
    let screen = '';
    let next = 0;
    let typedAt = 0;
    const onOutput = (d: Buffer) => {
      screen += d.toString();
      const a = answers[next];
      if (a && a.after.test(screen.slice(typedAt))) {
        next++;
        typedAt = screen.length;
        child.stdin.write(a.type);
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    child.on('error', reject);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no exit; screen so far:\n${screen}`));
    }, 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code, screen });
    });
  });
}

describe('password prompts', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('reads the password without echo on a terminal, asks twice, and the user can log in with it', async () => {
    const { dir, config } = tempConfig();
    dirs.push(dir);
    const c = ['--config', config];
    const secret = 'Pty-Secret-42';
    const add = await onTerminal([...c, 'user', 'add', 'alice@localhost'], [
      { after: /Password: $/, type: `${secret}\r` },
      { after: /Repeat it: $/, type: `${secret}\r` },
    ]);
    expect(add.screen).toContain('created alice@localhost');
    expect(add.code).toBe(0);
    expect(add.screen).not.toContain(secret);
    expect(add.screen).not.toContain('Pty-');

    // Backspace edits what was typed; a mismatch changes nothing.
    const typo = await onTerminal([...c, 'user', 'passwd', 'alice@localhost'], [
      { after: /New password: $/, type: 'second-passX\u007f\r' },
      { after: /Repeat it: $/, type: 'second-pass-other\r' },
    ]);
    expect(typo.code).toBe(2);
    expect(typo.screen).toContain('differ');
    expect(typo.screen).not.toContain('second-pass');
    const passwd = await onTerminal([...c, 'user', 'passwd', 'alice@localhost'], [
      { after: /New password: $/, type: 'second-passX\u007f\r' },
      { after: /Repeat it: $/, type: 'second-pass\r' },
    ]);
    expect(passwd.code).toBe(0);
    expect(passwd.screen).toContain('password changed for alice@localhost');
    expect(passwd.screen).not.toContain('second-pass');

    // Arrow keys are not password characters (their escape sequences are dropped), and a paste of
    // both answers at the first prompt answers both prompts.
    const arrows = await onTerminal([...c, 'user', 'add', 'dave@localhost'], [
      { after: /Password: $/, type: 'arrow\u001b[Dkeys\u001bOH\r' },
      { after: /Repeat it: $/, type: 'arrowkeys\r' },
    ]);
    expect(arrows.code).toBe(0);
    const pasted = await onTerminal([...c, 'user', 'add', 'erin@localhost'], [{ after: /Password: $/, type: 'pasted-pw\rpasted-pw\r' }]);
    expect(pasted.code).toBe(0);
    expect(pasted.screen).not.toContain('pasted-pw');

    // Scripts: $PARLEY_PASSWORD, and a pipe.
    expect((await runCli([...c, 'user', 'add', 'bob@localhost'], { env: { PARLEY_PASSWORD: 'bob-from-env' } })).code).toBe(0);
    const piped = await runCli([...c, 'user', 'add', 'carol@localhost'], { input: 'carol-from-pipe\n', env: { PARLEY_PASSWORD: '' } });
    expect(piped.code).toBe(0);
    expect(piped.stdout + piped.stderr).not.toContain('carol-from-pipe');

    const srv = await startServerProcess(config);
    try {
      for (const [username, password] of [['alice', 'second-pass'], ['bob', 'bob-from-env'], ['carol', 'carol-from-pipe'], ['dave', 'arrowkeys'], ['erin', 'pasted-pw']]) {
        const client = await connect({ port: srv.c2sPort, username: username as string, password: password as string });
        await client.stop();
      }
      await expect(connect({ port: srv.c2sPort, username: 'alice', password: secret })).rejects.toThrow();
    } finally {
      srv.child.kill('SIGTERM');
      await waitExit(srv.child);
    }
  }, 90_000);
});
