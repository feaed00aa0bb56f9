// Quick c2s benchmark: N users log in over plain TCP (SASL PLAIN) to a `parley start` child process,
// then S senders send chat messages to random online users for D seconds with a window of W
// messages in flight each. Prints logins/s, delivered messages/s, latency percentiles, server CPU
// per delivered message (from /proc) and RSS per session. The full comparative harness (Prosody,
// ejabberd, workloads W1-W7) is issue 4; this is the baseline for work on the hot path.
//   node --import tsx bench/c2s.ts [users=500] [senders=100] [seconds=10] [window=10]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { validateConfig } from '../src/core/config.js';
import { openStorage } from '../src/storage/index.js';
import { AccountService } from '../src/auth/index.js';

const [USERS = 500, SENDERS = 100, SECONDS = 10, WINDOW = 10] = process.argv.slice(2).map(Number);
const BIN = resolve(import.meta.dirname, '../bin/parley');
const CLK = 100; // USER_HZ

function procStat(pid: number): { cpu: number; rss: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpu = (Number(f[11]) + Number(f[12])) / CLK;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
  return { cpu, rss };
}

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

class RawClient {
  sock: net.Socket;
  buf = '';
  waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  onMessage: ((body: string) => void) | null = null;
  constructor(port: number) {
    this.sock = net.connect({ port, host: '127.0.0.1' });
    this.sock.setNoDelay(true);
    this.sock.setEncoding('utf8');
    this.sock.on('data', (d: string) => {
      this.buf += d;
      if (this.onMessage) {
        const re = /<body>t:(\d+)<\/body>/g;
        let last = 0;
        for (let m = re.exec(this.buf); m; m = re.exec(this.buf)) {
          this.onMessage(m[1] as string);
          last = re.lastIndex;
        }
        if (last) this.buf = this.buf.slice(last);
        if (this.buf.length > 65536) this.buf = this.buf.slice(-4096);
      }
      for (let i = 0; i < this.waiters.length; i++) {
        const w = this.waiters[i] as (typeof this.waiters)[number];
        const m = w.re.exec(this.buf);
        if (m) {
          this.buf = this.buf.slice(m.index + m[0].length);
          this.waiters.splice(i, 1);
          i--;
          w.resolve(m);
        }
      }
    });
    this.sock.on('error', () => {});
  }
  wait(re: RegExp): Promise<RegExpExecArray> {
    const m = re.exec(this.buf);
    if (m) {
      this.buf = this.buf.slice(m.index + m[0].length);
      return Promise.resolve(m);
    }
    return new Promise((r) => this.waiters.push({ re, resolve: r }));
  }
  async login(user: string, password: string): Promise<string> {
    const header = `<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
    this.sock.write(header);
    await this.wait(/<\/stream:features>/);
    this.sock.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString('base64')}</auth>`);
    await this.wait(/<success[^>]*\/>|<success[^>]*>[^<]*<\/success>/);
    this.sock.write(header);
    await this.wait(/<\/stream:features>/);
    this.sock.write(`<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>`);
    const m = await this.wait(/<jid>([^<]+)<\/jid>/);
    this.sock.write(`<presence/>`);
    return m[1] as string;
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-bench-'));
  const cfgText = `hosts: [localhost]\ndataDir: ${dir}/data\nlisten: { address: 127.0.0.1, c2s: 0, c2sDirectTls: null }\ntls: { required: false }\nauth: { allowPlainWithoutTls: true, maxFailuresPerAddress: 1000000 }\nlog: { level: warn }\nlimits: { connectionsPerAddress: 100000, preAuthPerAddress: 100000, stanzasPerSecond: 100000, burstStanzas: 100000, bytesPerSecond: 100000000, burstBytes: 100000000, idlePingSeconds: 0 }\n`;
  writeFileSync(join(dir, 'parley.yaml'), cfgText);
  const cfg = validateConfig({ dataDir: `${dir}/data` });
  mkdirSync(`${dir}/data`, { recursive: true });
  const storage = await openStorage({ type: 'sqlite', path: cfg.storage.type === 'sqlite' ? (cfg.storage.path as string) : '' });
  const accounts = new AccountService(storage);
  const t0 = Date.now();
  await Promise.all(Array.from({ length: USERS }, (_, i) => accounts.create(`u${i}@localhost`, 'pw')));
  await storage.close();
  console.log(`provisioned ${USERS} users in ${Date.now() - t0} ms`);

  const child = spawn(BIN, ['--config', join(dir, 'parley.yaml'), 'start'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((r) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /\(STARTTLS\): \S+ port (\d+)/.exec(out);
      if (m) r(Number(m[1]));
    });
  });
  const pid = child.pid as number;
  await new Promise((r) => setTimeout(r, 500));
  const before = procStat(pid);

  const clients: RawClient[] = [];
  const loginTimes: number[] = [];
  const tl = Date.now();
  const conc = 50;
  for (let i = 0; i < USERS; i += conc) {
    await Promise.all(
      Array.from({ length: Math.min(conc, USERS - i) }, async (_, j) => {
        const c = new RawClient(port);
        const s = performance.now();
        await c.login(`u${i + j}`, 'pw');
        loginTimes.push(performance.now() - s);
        clients[i + j] = c;
      }),
    );
  }
  const loginMs = Date.now() - tl;
  await new Promise((r) => setTimeout(r, 1000));
  const afterLogin = procStat(pid);
  loginTimes.sort((a, b) => a - b);

  const latencies: number[] = [];
  let delivered = 0;
  let measuring = false;
  const inflight = new Map<number, number>();
  for (const c of clients) {
    c.buf = '';
    c.onMessage = (t) => {
      const sent = Number(t);
      const lat = performance.now() * 1000 - Math.floor(sent / 1000); // µs
      if (measuring) {
        delivered++;
        latencies.push(lat / 1000);
      }
      const s = inflight.get(sent);
      if (s !== undefined) inflight.delete(sent);
    };
  }
  let seq = 0;
  const senders = clients.slice(0, SENDERS);
  let running = true;
  const cpuStart = procStat(pid).cpu;
  measuring = true;
  const tStart = performance.now();
  await Promise.all(
    senders.map(async (c, idx) => {
      let outstanding = 0;
      const me = idx;
      const pump = () => {
        while (running && outstanding < WINDOW) {
          let to = Math.floor(Math.random() * USERS);
          if (to === me) to = (to + 1) % USERS;
          const stamp = Math.floor(performance.now() * 1000) * 1000 + (seq++ % 1000);
          inflight.set(stamp, me);
          outstanding++;
          c.sock.write(`<message to='u${to}@localhost' type='chat'><body>t:${stamp}</body></message>`);
        }
      };
      // Window accounting: a sender's outstanding count drops when any message it sent arrives.
      const tick = setInterval(() => {
        let mine = 0;
        for (const v of inflight.values()) if (v === me) mine++;
        outstanding = mine;
        pump();
      }, 5);
      pump();
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
      running = false;
      clearInterval(tick);
    }),
  );
  const elapsed = (performance.now() - tStart) / 1000;
  measuring = false;
  const cpuEnd = procStat(pid).cpu;
  latencies.sort((a, b) => a - b);
  const cpu = cpuEnd - cpuStart;
  const rows = [
    ['users', USERS],
    ['senders x window', `${SENDERS} x ${WINDOW}`],
    ['logins/s', (USERS / (loginMs / 1000)).toFixed(0)],
    ['login ms p50 / p99', `${pct(loginTimes, 50).toFixed(1)} / ${pct(loginTimes, 99).toFixed(1)}`],
    ['delivered msg/s', (delivered / elapsed).toFixed(0)],
    ['latency ms p50 / p95 / p99 / max', `${pct(latencies, 50).toFixed(2)} / ${pct(latencies, 95).toFixed(2)} / ${pct(latencies, 99).toFixed(2)} / ${(latencies.at(-1) ?? 0).toFixed(2)}`],
    ['server CPU s (measured window)', cpu.toFixed(2)],
    ['server CPU us / delivered msg', ((cpu * 1e6) / Math.max(1, delivered)).toFixed(1)],
    ['RSS before login MiB', (before.rss / 1048576).toFixed(1)],
    ['RSS after login MiB', (afterLogin.rss / 1048576).toFixed(1)],
    ['RSS per session KiB', ((afterLogin.rss - before.rss) / USERS / 1024).toFixed(1)],
  ];
  console.log('| metric | value |\n|---|---|');
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
  for (const c of clients) c.sock.destroy();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
