// Load generator worker: a forked child (`node --import tsx bench/load/worker.ts`) that holds a
// contiguous block of users, logs them in, joins rooms and runs traffic on the coordinator's
// commands (bench/load/protocol.ts), and answers with its results over IPC. Every stanza id a worker
// sends is received by clients of the same worker, so window accounting and loss counting stay
// local; latencies use the machine-wide clock of nowUs().
import { type LoginOptions, XmppClient, nowUs } from './client.js';
import { type HistData, newHist, record } from './hist.js';
import type { Command, InitCmd, JoinCmd, JoinResult, LoginCmd, LoginResult, Reply, TrafficCmd, TrafficResult } from './protocol.js';

let init: InitCmd | null = null;
let clients: (XmppClient | undefined)[] = [];

// ---- traffic state (one run at a time) ----------------------------------------------------------------

interface Run {
  cmd: TrafficCmd;
  slotOf: Int32Array; // local user offset -> sender slot, -1 if not a sender
  expect: Int32Array; // per slot
  seq: Uint32Array; // per slot: stanzas sent
  out: Float64Array; // per slot: deliveries outstanding (window mode)
  counts: Uint8Array[]; // per slot: receipts per seq
  received: number;
  foreign: number;
  delivered: number;
  hist: HistData;
  sending: boolean;
  dirty: number[];
  isDirty: Uint8Array;
  flushScheduled: boolean;
  online: number[]; // global indices of logged-in users (chat recipients)
}

let run: Run | null = null;

function onTag(c: XmppClient, sender: number, seq: number, stamp: number): void {
  const r = run;
  const lo = (init as InitCmd).lo;
  if (!r) return;
  if (sender === c.index && !r.cmd.countSelf) return; // our own presence, echoed back
  const off = sender - lo;
  const slot = off >= 0 && off < r.slotOf.length ? (r.slotOf[off] as number) : -1;
  if (slot < 0) {
    r.foreign++;
    return;
  }
  r.received++;
  let counts = r.counts[slot] as Uint8Array;
  if (seq >= counts.length) {
    const grown = new Uint8Array(Math.max(seq + 1, counts.length * 2));
    grown.set(counts);
    counts = grown;
    r.counts[slot] = grown;
  }
  counts[seq] = Math.min(255, (counts[seq] as number) + 1);
  const t = nowUs();
  if (t >= r.cmd.measureFrom && t <= r.cmd.measureTo) {
    r.delivered++;
    record(r.hist, t - stamp);
  }
  if (r.cmd.mode === 'window') {
    r.out[slot] = Math.max(0, (r.out[slot] as number) - 1);
    if (!r.isDirty[slot]) {
      r.isDirty[slot] = 1;
      r.dirty.push(slot);
    }
    if (!r.flushScheduled) {
      r.flushScheduled = true;
      setImmediate(flush);
    }
  }
}

function stanza(r: Run, slot: number, stamp: number): string {
  const cmd = r.cmd;
  const sender = cmd.senders[slot] as number;
  const s = (r.seq[slot] as number) + 0;
  r.seq[slot] = s + 1;
  const tag = `t:${sender}:${s}:${stamp}`;
  if (cmd.kind === 'chat') {
    const on = r.online;
    let to = on[Math.floor(Math.random() * on.length)] as number;
    if (to === sender) to = on[(on.indexOf(to) + 1) % on.length] as number;
    return `<message to='u${to}@${(init as InitCmd).domain}' type='chat'><body>${tag}</body></message>`;
  }
  if (cmd.kind === 'presence') return `<presence><status>${tag}</status></presence>`;
  return `<message to='${(cmd.rooms as string[])[slot]}' type='groupchat'><body>${tag}</body></message>`;
}

/** Window mode: fill sender `slot` up to its window, in one write. */
function pump(r: Run, slot: number): void {
  if (!r.sending) return;
  const exp = r.expect[slot] as number;
  const n = Math.floor((r.cmd.window * exp - (r.out[slot] as number)) / exp);
  if (n <= 0) return;
  const c = clients[(r.cmd.senders[slot] as number) - (init as InitCmd).lo];
  if (!c || c.closed) return;
  const stamp = nowUs();
  let s = '';
  for (let k = 0; k < n; k++) s += stanza(r, slot, stamp);
  r.out[slot] = (r.out[slot] as number) + n * exp;
  c.write(s);
}

function flush(): void {
  const r = run;
  if (!r) return;
  r.flushScheduled = false;
  const list = r.dirty.splice(0);
  for (const slot of list) {
    r.isDirty[slot] = 0;
    pump(r, slot);
  }
}

const sleep = (ms: number) => new Promise<void>((res) => setTimeout(res, ms));
const sleepUntil = (us: number) => sleep(Math.max(0, (us - nowUs()) / 1000));

async function traffic(cmd: TrafficCmd): Promise<TrafficResult> {
  const { lo, hi } = init as InitCmd;
  const n = cmd.senders.length;
  const slotOf = new Int32Array(hi - lo).fill(-1);
  cmd.senders.forEach((s, i) => {
    slotOf[s - lo] = i;
  });
  const r: Run = {
    cmd,
    slotOf,
    expect: Int32Array.from(cmd.expect),
    seq: new Uint32Array(n),
    out: new Float64Array(n),
    counts: Array.from({ length: n }, () => new Uint8Array(256)),
    received: 0,
    foreign: 0,
    delivered: 0,
    hist: newHist(),
    sending: false,
    dirty: [],
    isDirty: new Uint8Array(n),
    flushScheduled: false,
    online: clients.flatMap((c) => (c && !c.closed ? [c.index] : [])),
  };
  if (cmd.kind === 'chat' && r.online.length < 2) throw new Error('chat needs at least 2 online users per worker');
  run = r;
  for (const c of clients) {
    if (c) {
      c.errors = 0;
      c.firstError = '';
    }
  }
  let cpu0 = 0;
  const cpuNow = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const t0 = setTimeout(() => {
    cpu0 = cpuNow();
  }, (cmd.measureFrom - nowUs()) / 1000);
  await sleepUntil(cmd.startAt);
  r.sending = true;
  let ticker: NodeJS.Timeout | undefined;
  if (cmd.mode === 'window') {
    for (let s = 0; s < n; s++) pump(r, s);
  } else if (n > 0) {
    // Rate mode: every 2 ms send what is due since startAt, round-robin over the senders, one write
    // per sender per tick.
    let sent = 0;
    let rr = 0;
    const start = nowUs();
    const batch = new Map<number, string>();
    ticker = setInterval(() => {
      const now = nowUs();
      const due = Math.floor((cmd.rate * (now - start)) / 1e6) - sent;
      if (due <= 0) return;
      for (let k = 0; k < due; k++) {
        const slot = rr;
        rr = (rr + 1) % n;
        batch.set(slot, (batch.get(slot) ?? '') + stanza(r, slot, now));
      }
      sent += due;
      for (const [slot, s] of batch) clients[(cmd.senders[slot] as number) - lo]?.write(s);
      batch.clear();
    }, 2);
  }
  await sleepUntil(cmd.measureTo);
  const cpu1 = cpuNow();
  clearTimeout(t0);
  r.sending = false;
  if (ticker) clearInterval(ticker);
  // Drain: wait for what is in flight (expected deliveries), or until nothing arrives for a while.
  let expected = 0;
  for (let s = 0; s < n; s++) expected += (r.seq[s] as number) * (r.expect[s] as number);
  const d0 = Date.now();
  let last = r.received;
  let lastChange = Date.now();
  while (r.received < expected && Date.now() - d0 < cmd.drainMs) {
    await sleep(50);
    if (r.received !== last) {
      last = r.received;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > Math.min(3000, cmd.drainMs)) break;
  }
  const drainMs = Date.now() - d0;
  // Loss per stanza id: each (sender, seq) should have been received exactly expect times.
  let lost = 0;
  let dup = 0;
  let sentTotal = 0;
  for (let s = 0; s < n; s++) {
    const exp = r.expect[s] as number;
    const counts = r.counts[s] as Uint8Array;
    const m = r.seq[s] as number;
    sentTotal += m;
    for (let k = 0; k < m; k++) {
      const got = k < counts.length ? (counts[k] as number) : 0;
      if (got < exp) lost += exp - got;
      else if (got > exp) dup += got - exp;
    }
    for (let k = m; k < counts.length; k++) dup += counts[k] as number;
  }
  let errors = 0;
  let disconnected = 0;
  let firstError = '';
  for (const c of clients) {
    if (!c) continue;
    errors += c.errors;
    if (c.closed) disconnected++;
    if (!firstError && c.firstError) firstError = c.firstError;
  }
  run = null;
  return {
    sent: sentTotal,
    expected,
    received: r.received,
    lost,
    dup,
    foreign: r.foreign,
    delivered: r.delivered,
    hist: r.hist,
    cpu: cpu1 - cpu0,
    errors,
    disconnected,
    firstError,
    drainMs,
  };
}

// ---- login, join, logout ------------------------------------------------------------------------------

async function login(cmd: LoginCmd): Promise<LoginResult> {
  const ini = init as InitCmd;
  const hist = newHist();
  let failed = 0;
  let ok = 0;
  let firstError = '';
  let next = ini.lo;
  clients = new Array(ini.hi - ini.lo);
  const t0 = nowUs();
  const one = async () => {
    for (let i = next++; i < ini.hi; i = next++) {
      const c = new XmppClient(i, ini.host, ini.port);
      const o: LoginOptions = {
        host: ini.host,
        port: ini.port,
        domain: ini.domain,
        user: `u${i}`,
        password: ini.password,
        tls: cmd.tls,
        mech: cmd.mech,
        resource: cmd.resource,
        rosterGet: cmd.rosterGet,
        presence: cmd.presence,
        timeoutMs: cmd.timeoutMs,
      };
      const t = nowUs();
      try {
        await c.login(o);
        record(hist, nowUs() - t);
        c.onTag = onTag;
        clients[i - ini.lo] = c;
        ok++;
      } catch (e) {
        failed++;
        if (!firstError) firstError = (e as Error).message;
        c.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(cmd.concurrency, ini.hi - ini.lo)) }, one));
  return { ok, failed, firstError, t0, t1: nowUs(), hist };
}

async function join(cmd: JoinCmd): Promise<JoinResult> {
  const lo = (init as InitCmd).lo;
  const t0 = performance.now();
  let joined = 0;
  let failed = 0;
  let created = 0;
  let firstError = '';
  const joinOne = async (room: string, i: number) => {
    const c = clients[i - lo];
    if (!c) {
      failed++;
      if (!firstError) firstError = `u${i} is not logged in`;
      return false;
    }
    try {
      const made = await c.joinRoom(room, `u${i}`);
      if (made) {
        created++;
        await c.unlockRoom(room);
      }
      joined++;
      return true;
    } catch (e) {
      failed++;
      if (!firstError) firstError = (e as Error).message;
      return false;
    }
  };
  // First the creators (one per room), then everyone else; `concurrency` joins at once.
  const pool = async <T>(items: T[], fn: (x: T) => Promise<unknown>) => {
    let k = 0;
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(cmd.concurrency, items.length)) }, async () => {
        for (let j = k++; j < items.length; j = k++) await fn(items[j] as T);
      }),
    );
  };
  await pool(cmd.rooms, (r) => joinOne(r.room, r.members[0] as number));
  await pool(
    cmd.rooms.flatMap((r) => r.members.slice(1).map((m) => [r.room, m] as const)),
    ([room, m]) => joinOne(room, m),
  );
  return { joined, failed, created, firstError, seconds: (performance.now() - t0) / 1000 };
}

async function logout(): Promise<number> {
  const all = clients.filter((c): c is XmppClient => !!c);
  clients = [];
  await Promise.all(all.map((c) => c.close()));
  return all.length;
}

// ---- IPC ----------------------------------------------------------------------------------------------

async function handle(cmd: Command): Promise<unknown> {
  switch (cmd.op) {
    case 'init':
      init = cmd;
      return process.pid;
    case 'login':
      return login(cmd);
    case 'join':
      return join(cmd);
    case 'traffic':
      return traffic(cmd);
    case 'logout':
      return logout();
    case 'exit':
      for (const c of clients) c?.destroy();
      setImmediate(() => process.exit(0));
      return null;
  }
}

process.on('message', (msg: { id: number; cmd: Command }) => {
  handle(msg.cmd).then(
    (result) => process.send?.({ id: msg.id, ok: true, result } satisfies Reply),
    (err: Error) => process.send?.({ id: msg.id, ok: false, error: err?.stack ?? String(err) } satisfies Reply),
  );
});
// The coordinator went away: nothing left to do.
process.on('disconnect', () => process.exit(0));
