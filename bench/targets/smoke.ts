// Smoke test of the benchmark targets: for each of parley (1 mux), parley --no-mux, prosody and
// ejabberd, provision --users users (password 'pw') with small mutual rosters (a ring of --roster:
// by default u_i has u_i±1 and u_i±2), start it on a free loopback port with STARTTLS offered and a MUC service, then
// over raw sockets with SASL PLAIN:
//   - u0 logs in without TLS, u1 after STARTTLS; both send initial presence and must each receive
//     the other's (roster contacts, subscription both);
//   - u0 sends u1 a chat message;
//   - u0 sends a chat message to the offline u3, who then logs in and must get it (offline storage);
//   - MUC (where the target has it): u0 and u1 join room1@<muc>, u0's groupchat message reaches u1;
// then stop it and check that the port is free and no process of it is left.
// One line per target: version, provisioning time, start time, PASS/FAIL.
//
//   node --import tsx bench/targets/smoke.ts [--users 200] [--roster 4] [--only parley,prosody] [--keep]
// (--users 5000 shows the provisioning times at W1's size; SCRAM derivation is timed separately,
// once per process, before the first target.)
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PASSWORD, RawXmpp, type TargetInfo, alive, freePort, portBindable, userSecrets } from './common.js';
import { ejabberd } from './ejabberd.js';
import { parley, parleyNoMux } from './parley.js';
import { prosody } from './prosody.js';
import type { TargetOptions } from './types.js';

const { values: opt } = parseArgs({
  options: {
    users: { type: 'string', default: '200' },
    roster: { type: 'string', default: '4' },
    only: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
  strict: true,
});
const USERS = Number(opt.users);
const ROSTER = Number(opt.roster);
const DOMAIN = 'localhost';
const MUC = `conference.${DOMAIN}`;

const TARGETS: { key: string; factory: (o: TargetOptions) => Promise<TargetInfo> }[] = [
  { key: 'parley', factory: parley },
  { key: 'parley-nomux', factory: parleyNoMux },
  { key: 'prosody', factory: prosody },
  { key: 'ejabberd', factory: ejabberd },
];

/** A ring: u_i has the r/2 users before and after it (r even, < n). */
function ringRosters(n: number, r: number): Map<string, string[]> {
  const m = new Map<string, string[]>();
  const ds: number[] = [];
  for (let d = 1; d <= r / 2; d++) ds.push(d, -d);
  for (let i = 0; i < n; i++) m.set(`u${i}`, ds.map((d) => `u${(i + d + n) % n}@${DOMAIN}`));
  return m;
}

const presenceFrom = (user: string) => new RegExp(`<presence(?![^>]*type=['"]unavailable)[^>]*from=['"]${user}@${DOMAIN}/[^'"]*['"][^>]*>`);

async function exercise(t: TargetInfo): Promise<string[]> {
  const notes: string[] = [];
  const a = await RawXmpp.connect(t.port, DOMAIN);
  const b = await RawXmpp.connect(t.port, DOMAIN);
  try {
    await a.login('u0', PASSWORD, { resource: 'a' });
    await b.login('u1', PASSWORD, { resource: 'b', tls: true });
    notes.push('PLAIN', 'STARTTLS+PLAIN');
    a.write(`<presence/>`);
    await a.wait(presenceFrom('u0'), 5000).catch(() => null); // own presence echo, where sent
    b.write(`<presence/>`);
    await Promise.all([a.wait(presenceFrom('u1'), 10_000), b.wait(presenceFrom('u0'), 10_000)]);
    notes.push('presence both ways');

    a.write(`<message type='chat' to='u1@${DOMAIN}' id='m1'><body>smoke-chat-1</body></message>`);
    await b.wait(/<message[^>]*>(?:(?!<\/message>)[\s\S])*smoke-chat-1(?:(?!<\/message>)[\s\S])*<\/message>/, 10_000);
    notes.push('chat');

    a.write(`<message type='chat' to='u3@${DOMAIN}' id='m2'><body>smoke-offline-1</body></message>`);
    await new Promise((r) => setTimeout(r, 300));
    const c = await RawXmpp.connect(t.port, DOMAIN);
    try {
      await c.login('u3', PASSWORD, { resource: 'c' });
      c.write(`<presence/>`);
      await c.wait(/<message[^>]*>(?:(?!<\/message>)[\s\S])*smoke-offline-1/, 10_000);
      notes.push('offline');
    } finally {
      c.close();
    }

    // MUC, where there is one: disco#info of the service says.
    a.write(`<iq type='get' id='d1' to='${MUC}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
    const info = (await a.wait(/<iq[^>]*id=['"]d1['"][^>]*(?:\/>|>[\s\S]*?<\/iq>)/, 10_000))[0];
    if (/http:\/\/jabber\.org\/protocol\/muc['"]/.test(info)) {
      const room = `room1@${MUC}`;
      a.write(`<presence to='${room}/a'><x xmlns='http://jabber.org/protocol/muc'/></presence>`);
      await a.wait(/<status code=['"]110['"]/, 10_000);
      b.write(`<presence to='${room}/b'><x xmlns='http://jabber.org/protocol/muc'/></presence>`);
      await b.wait(/<status code=['"]110['"]/, 10_000);
      a.write(`<message type='groupchat' to='${room}' id='g1'><body>smoke-muc-1</body></message>`);
      await b.wait(/<message[^>]*type=['"]groupchat['"][^>]*>(?:(?!<\/message>)[\s\S])*smoke-muc-1/, 10_000);
      notes.push('MUC');
    } else {
      notes.push('no MUC service');
    }
  } finally {
    a.close();
    b.close();
  }
  return notes;
}

const fmt = (ms: number) => `${Math.round(ms)} ms`;

async function main(): Promise<number> {
  const only = opt.only ? new Set(opt.only.split(',')) : null;
  const t0 = performance.now();
  await userSecrets(USERS, 'SHA-1');
  const t1 = performance.now();
  await userSecrets(USERS, 'SHA-256');
  const t2 = performance.now();
  console.log(`SCRAM secrets for ${USERS} users (4096 iterations, once per process, shared by all targets): SHA-1 ${fmt(t1 - t0)}, SHA-256 ${fmt(t2 - t1)}`);
  let failed = 0;
  for (const { key, factory } of TARGETS) {
    if (only && !only.has(key)) continue;
    const dir = mkdtempSync(join(os.tmpdir(), `smoke-${key}-`));
    const port = await freePort();
    let target: TargetInfo | null = null;
    let line = '';
    try {
      const s = performance.now();
      target = await factory({ dir, port, domain: DOMAIN, users: USERS, rosters: ringRosters(USERS, ROSTER), tls: true, muc: MUC });
      const startMs = performance.now() - s;
      const head = `${target.name.padEnd(16)} ${target.version.padEnd(28)} provision ${fmt(target.provisionMs).padStart(8)} (${USERS} users, ${(USERS * ROSTER).toLocaleString('en')} roster items), start ${fmt(startMs).padStart(8)}`;
      const pids = [...target.serverPids(), ...target.muxPids()];
      const notes = await exercise(target);
      await target.stop();
      const left = pids.filter(alive);
      if (left.length) throw new Error(`processes left after stop: ${left.join(', ')}`);
      if (!(await portBindable(port))) throw new Error(`port ${port} still bound after stop`);
      target = null;
      line = `${head}  PASS (${notes.join(', ')}; stopped clean)`;
    } catch (err) {
      failed++;
      line = `${key.padEnd(16)} FAIL: ${(err as Error).message}`;
      if (target) await target.stop().catch((e) => (line += `\n  stop failed too: ${(e as Error).message}`));
    } finally {
      if (opt.keep) console.log(`  kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
    console.log(line);
  }
  return failed;
}

main().then(
  (failed) => process.exit(failed ? 1 : 0),
  (err) => {
    console.error(err);
    process.exit(2);
  },
);
