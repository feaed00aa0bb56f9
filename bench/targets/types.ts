// The interface between the servers under test (bench/targets/*) and the load generator and runner
// (bench/load/*, bench/run.ts) of issue 4.
export interface TargetOptions {
  /** Work directory for configs, data and logs (created by the caller, removed by the caller). */
  dir: string;
  /** Client port to listen on (plain TCP with optional STARTTLS), 127.0.0.1. */
  port: number;
  domain: string; // 'localhost'
  /** Users to create before start: usernames u0..u{users-1}, password 'pw'. */
  users: number;
  /** Optional rosters: for W5, each user's contacts (bare JIDs) with mutual subscription (both). */
  rosters?: Map<string, string[]>;
  /** true: offer STARTTLS (not required) with a self-signed cert; false: plain only. PLAIN must be allowed without TLS in both cases. */
  tls: boolean;
  /** MUC service domain to enable (e.g. 'conference.localhost'); rooms are created on join. */
  muc?: string;
}
export interface Target {
  name: string; // 'parley', 'parley (no mux)', 'prosody', 'ejabberd'
  version: string; // as reported by the server itself
  port: number;
  domain: string;
  /** PIDs whose CPU/RSS count as "the server" (main process; for Parley also list muxes separately). */
  serverPids(): number[];
  muxPids(): number[]; // [] for peers
  stop(): Promise<void>;
}
export type TargetFactory = (opts: TargetOptions) => Promise<Target>;
