// Messages between the coordinator (bench/load/coordinator.ts) and its forked workers
// (bench/load/worker.ts), sent over the child_process IPC channel with `serialization: 'advanced'`
// (typed arrays travel as such). Every command carries an id; the worker answers each one once.
import type { Mechanism } from './client.js';
import type { HistData } from './hist.js';

export interface InitCmd {
  op: 'init';
  worker: number;
  host: string;
  port: number;
  domain: string;
  password: string;
  /** This worker's users: global indices lo <= i < hi (user name u<i>). */
  lo: number;
  hi: number;
}

export interface LoginCmd {
  op: 'login';
  mech: Mechanism;
  tls: boolean;
  /** Logins in progress at once in this worker. */
  concurrency: number;
  resource: string;
  rosterGet: boolean;
  presence: boolean;
  timeoutMs: number;
}

export interface JoinCmd {
  op: 'join';
  rooms: { room: string; members: number[] }[];
  concurrency: number;
}

/**
 * Traffic: every sender sends stanzas carrying `t:<sender>:<seq>:<µs>` (in <body> or <status>)
 * that `expect[i]` clients of the same worker should receive. Recipients of chat messages are
 * random logged-in users of the worker (never the sender). Times are µs on the shared clock.
 */
export interface TrafficCmd {
  op: 'traffic';
  kind: 'chat' | 'presence' | 'groupchat';
  senders: number[];
  /** Deliveries each stanza of senders[i] should cause. */
  expect: number[];
  /** groupchat: the room of senders[i]. */
  rooms?: string[];
  mode: 'window' | 'rate';
  /** window mode: stanzas in flight per sender (a stanza is in flight until all its deliveries arrived). */
  window: number;
  /** rate mode: stanzas per second for this worker, spread round-robin over its senders. */
  rate: number;
  startAt: number;
  measureFrom: number;
  measureTo: number;
  /** After measureTo: wait at most this long for what is in flight. */
  drainMs: number;
  /** Count a sender's own stanza coming back to it (MUC reflection); presence echoes are ignored. */
  countSelf: boolean;
}

export interface LogoutCmd {
  op: 'logout';
}

export interface ExitCmd {
  op: 'exit';
}

export type Command = InitCmd | LoginCmd | JoinCmd | TrafficCmd | LogoutCmd | ExitCmd;

export interface LoginResult {
  ok: number;
  failed: number;
  firstError: string;
  /** µs, shared clock: first connect, last login done. */
  t0: number;
  t1: number;
  /** Login times (connect to bound / roster received), µs. */
  hist: HistData;
}

export interface JoinResult {
  joined: number;
  failed: number;
  created: number;
  firstError: string;
  seconds: number;
}

export interface TrafficResult {
  sent: number;
  /** Deliveries expected: sum over sent stanzas of their expect. */
  expected: number;
  received: number;
  /** Counted per stanza id (sender, seq): expected deliveries that never came / came too often. */
  lost: number;
  dup: number;
  /** Tags from senders this worker does not know (misrouted). */
  foreign: number;
  /** Deliveries received inside [measureFrom, measureTo], and their latencies. */
  delivered: number;
  hist: HistData;
  /** process.cpuUsage() of the worker between measureFrom and measureTo, seconds. */
  cpu: number;
  errors: number;
  disconnected: number;
  firstError: string;
  drainMs: number;
}

export type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
