#!/usr/bin/env node
// The `parley` command: start, user add|remove|passwd|list, token issue|list|revoke, check-config, policy explain, status.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Command } from 'commander';
import { loadConfig, ConfigError, muxLinkEncrypted, type ResolvedConfig } from '../core/config.js';
import { createLogger, silentLogger } from '../core/logger.js';
import { AccountService, AccountError, directoriesFor, parseAccountJid, TokenError, TokenService } from '../auth/index.js';
import { ACL_STATUS_FILE, FileAccessControl, formatAclReport, readAclStatus } from '../auth/index.js';
import { builtinModules } from '../modules/index.js';
import { CACHE_STATUS_FILE, openConfiguredStorage, startParley, type CacheFlushReport } from './app.js';
import type { Storage } from '../storage/types.js';
import { runMux } from '../mux/index.js';
import { muxSecret } from './secrets.js';
import { dataDirWarning, ensurePrivateDataDir } from './datadir.js';
import { modulesReference } from './modules-doc.js';
import { ldapTest } from './ldap-test.js';
import { AlertInputError, PRIORITIES, storeAlert } from '../modules/alerts.js';
import type { AlertPriority } from '../storage/types.js';
import { hostname } from 'node:os';
import { ENTITLEMENTS, SERVICE_RIGHTS, SUN_RIGHT_NAMES, formatRule, isEntitlement, rightByName, type Entitlement, type ServiceRight } from '../core/acl.js';
import { Jid } from '../xmpp/jid.js';

// Everything this command writes (the database and its -wal/-shm, secrets, status files) is for
// the server's user only (issue 16 §1).
process.umask(0o077);

const program = new Command();
program.name('parley').description('Parley enterprise instant messaging (XMPP)').option('-c, --config <file>', 'configuration file', undefined);

/** The configuration, validated with the built-in modules' option schemas (unknown module names are errors). */
function config(): Readonly<ResolvedConfig> {
  return loadConfig(program.opts().config, { modules: builtinModules });
}

/**
 * The password for `user add` / `user passwd` when --password is not given: $PARLEY_PASSWORD (for
 * scripts), else typed at the terminal without echo (asked twice), else the first line of a pipe.
 */
async function readPassword(prompt: string): Promise<string> {
  if (process.env.PARLEY_PASSWORD) return process.env.PARLEY_PASSWORD;
  if (!process.stdin.isTTY) {
    const rl = createInterface({ input: process.stdin, terminal: false });
    const line: string = await new Promise((resolve) => {
      rl.once('line', resolve);
      rl.once('close', () => resolve(''));
    });
    rl.close();
    return line;
  }
  const first = await readHidden(prompt);
  if (!first) return first;
  if ((await readHidden('Repeat it: ')) !== first) throw new AccountError('the two passwords differ; nothing changed');
  return first;
}

/**
 * One line typed at the terminal, never shown: raw mode turns the terminal's echo off, so the
 * characters do not appear on screen nor in a terminal recording. Backspace and Ctrl-U edit,
 * Enter ends, Ctrl-C aborts (exit 130), Ctrl-D on an empty line ends with nothing.
 */
/** Typed ahead of the prompt that reads it (a pasted "pw\rpw\r" answers both prompts). */
let typedAhead = '';

function readHidden(prompt: string): Promise<string> {
  const input = process.stdin;
  // Echo off before the prompt shows: a person (or a paste) may start typing as soon as it does.
  input.setRawMode(true);
  process.stderr.write(prompt);
  return new Promise((resolve) => {
    let value = '';
    // Terminal escape sequences (arrow keys, Home, function keys, Alt+key) are not password
    // characters: ESC, then for CSI/SS3 ("ESC [", "ESC O") everything up to a final byte 0x40-0x7E.
    let escape: 'none' | 'esc' | 'seq' = 'none';
    let done = false;
    const finish = () => {
      done = true;
      input.off('data', onData);
      input.off('end', finish);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
      resolve(value);
    };
    const onData = (chunk: string) => {
      const chars = [...chunk];
      for (let i = 0; i < chars.length; i++) {
        const ch = chars[i] as string;
        if (escape === 'esc') {
          escape = ch === '[' || ch === 'O' ? 'seq' : 'none';
          continue;
        }
        if (escape === 'seq') {
          if (ch >= '@' && ch <= '~') escape = 'none';
          continue;
        }
        if (ch === '\u001b') {
          escape = 'esc';
          continue;
        }
        if (ch === '\r' || ch === '\n') {
          // What follows belongs to the next prompt (a "\r\n" pair counts as one Enter).
          const rest = chars.slice(i + 1).join('');
          typedAhead = ch === '\r' && rest.startsWith('\n') ? rest.slice(1) : rest;
          return finish();
        }
        if (ch === '\u0003') {
          input.setRawMode(false);
          process.stderr.write('\n');
          process.exit(130);
        }
        if (ch === '\u0004') {
          if (!value) return finish();
          continue;
        }
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch === '\u0015') value = '';
        else if (ch >= ' ') value += ch;
      }
    };
    input.setEncoding('utf8');
    input.on('data', onData);
    input.once('end', finish); // the terminal went away: what was typed so far
    if (typedAhead) {
      const ahead = typedAhead;
      typedAhead = '';
      onData(ahead);
    }
    if (!done) input.resume();
  });
}

async function withAccounts<T>(fn: (accounts: AccountService, cfg: Readonly<ResolvedConfig>) => Promise<T>): Promise<T> {
  const cfg = config();
  const storage = await openConfiguredStorage(cfg);
  try {
    // Directory hosts are known, so that `user add`/`passwd` refuse them instead of writing unused local records.
    const accounts = new AccountService(storage, cfg.auth.scramIterations, directoriesFor(cfg, silentLogger()));
    try {
      return await fn(accounts, cfg);
    } finally {
      await accounts.close();
    }
  } finally {
    await storage.close();
  }
}

function checkHost(cfg: Readonly<ResolvedConfig>, jid: string): void {
  const j = parseAccountJid(jid);
  if (!cfg.hosts.some((h) => h.domain === j.domain)) {
    throw new AccountError(`${j.domain} is not a host of this server (hosts: ${cfg.hosts.map((h) => h.domain).join(', ')})`);
  }
}

program
  .command('start')
  .description('start the server with the configuration (embedded defaults when there is no parley.yaml)')
  .option('--no-mux', 'clients connect to the server process directly (no multiplexor processes)')
  .action(async (o: { mux: boolean }) => {
    const cfg = config();
    const log = createLogger({ level: cfg.log.level });
    process.on('uncaughtException', (err) => log.fatal({ err }, 'uncaught exception (kept running)'));
    process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
    const running = await startParley(cfg, { log, statusFile: true, noMux: !o.mux });
    const muxCount = running.muxes ? cfg.mux.count : 0;
    const hosts = cfg.hosts.map((h) => h.domain).join(', ');
    const lines = [
      `Parley is running for ${hosts}`,
      running.ports.c2s !== null ? `  client connections (STARTTLS): ${cfg.listen.address} port ${running.ports.c2s}` : null,
      running.ports.c2sDirectTls !== null ? `  client connections (direct TLS): ${cfg.listen.address} port ${running.ports.c2sDirectTls}` : null,
      running.ports.https !== null ? `  web container (HTTPS): ${cfg.http.address} port ${running.ports.https}` : null,
      running.ports.http !== null ? `  web container (HTTP): ${cfg.http.plainAddress} port ${running.ports.http}` : null,
      muxCount ? `  through ${muxCount} multiplexor process${muxCount > 1 ? 'es' : ''} (pids ${running.muxes?.pids().join(', ')})` : '  clients connect to the server process directly (no multiplexor)',
      running.muxLink && cfg.mux.linkPort ? `  mux link: ${cfg.mux.linkAddress} port ${cfg.mux.linkPort}` : null,
      `  storage: ${cfg.storage.type}${cfg.storage.type === 'sqlite' ? ` (${cfg.storage.path})` : ''}`,
      `  certificate: ${running.certPath}`,
      // Administrators install this CA in clients (Pidgin, Firefox, phones) once; see docs/tls.md.
      running.ca ? `  local CA (install it in clients to trust this server, docs/tls.md): ${running.ca.path}` : null,
      running.ca ? `  local CA SHA-256 fingerprint: ${running.ca.fingerprint256}` : null,
      `Add a user:  ./bin/parley user add alice@${cfg.hosts[0]?.domain ?? 'localhost'}`,
    ].filter(Boolean);
    process.stdout.write(`${lines.join('\n')}\n`);
    const shutdown = async (sig: string) => {
      log.info({ sig }, 'shutting down');
      await running.stop();
      process.exit(0);
    };
    process.once('SIGINT', () => void shutdown('SIGINT'));
    process.once('SIGTERM', () => void shutdown('SIGTERM'));
    // `parley reload` (issue 7): re-read the access control files; the report goes to dataDir/acl-status.json.
    process.on('SIGHUP', () => {
      running.acl.reload('SIGHUP').catch((err: unknown) => log.error({ err }, 'access control reload failed'));
    });
    // `parley cache flush` (issue 8): forget every directory answer; the report goes to dataDir/cache-status.json.
    process.on('SIGUSR2', () => {
      running.flushDirectoryCaches('SIGUSR2');
    });
  });

program
  .command('mux')
  .description('run a standalone multiplexor: client ports of the configuration, one link to mux.server')
  .option('--name <name>', 'name shown in `parley status`', undefined)
  .action(async (o: { name?: string }) => {
    const cfg = config();
    const name = o.name ?? `mux-${hostname()}-${process.pid}`;
    const log = createLogger({ level: cfg.log.level }).child({ mux: name });
    process.on('uncaughtException', (err) => log.fatal({ err }, 'uncaught exception (kept running)'));
    process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));
    // Its data directory holds the link secret and TLS keys: private, like the server's.
    ensurePrivateDataDir(cfg.dataDir, log);
    const mux = await runMux({ config: cfg, link: cfg.mux.server, secret: muxSecret(cfg), name, log });
    process.stdout.write(
      `parley mux ${name}: client ports STARTTLS ${mux.ports.c2s ?? 'off'}, direct TLS ${mux.ports.c2sDirectTls ?? 'off'}; server link ${cfg.mux.server.host}:${cfg.mux.server.port} (${muxLinkEncrypted(cfg.mux.server.tls, cfg.mux.server.host) ? 'TLS' : 'plaintext'})\n`,
    );
    const shutdown = async () => {
      await mux.stop();
      process.exit(0);
    };
    process.once('SIGINT', () => void shutdown());
    process.once('SIGTERM', () => void shutdown());
  });

const user = program.command('user').description('manage accounts');
user
  .command('add <jid>')
  .description('create an account (password typed without echo, or from $PARLEY_PASSWORD, a pipe or --password)')
  .option('-p, --password <password>', 'the password (visible to other local users in the process list: prefer the prompt or $PARLEY_PASSWORD)')
  .action(async (jid: string, o: { password?: string }) => {
    await withAccounts(async (accounts, cfg) => {
      checkHost(cfg, jid);
      const pw = o.password ?? (await readPassword('Password: '));
      if (!pw) throw new AccountError('a password is required');
      const j = await accounts.create(jid, pw);
      process.stdout.write(`created ${j.bare}\n`);
    });
  });
user
  .command('remove <jid>')
  .description('delete an account and all its data')
  .action(async (jid: string) => {
    await withAccounts(async (accounts) => {
      await accounts.remove(jid);
      process.stdout.write(`removed ${parseAccountJid(jid).bare}\n`);
    });
  });
user
  .command('passwd <jid>')
  .description('set a new password (typed without echo, or from $PARLEY_PASSWORD, a pipe or --password)')
  .option('-p, --password <password>', 'the new password (visible to other local users in the process list: prefer the prompt or $PARLEY_PASSWORD)')
  .action(async (jid: string, o: { password?: string }) => {
    await withAccounts(async (accounts) => {
      const pw = o.password ?? (await readPassword('New password: '));
      if (!pw) throw new AccountError('a password is required');
      await accounts.setPassword(jid, pw);
      process.stdout.write(`password changed for ${parseAccountJid(jid).bare}\n`);
    });
  });
user
  .command('list [host]')
  .description('list accounts of a host (default: every host)')
  .action(async (host?: string) => {
    const cfg = config();
    const storage = await openConfiguredStorage(cfg);
    try {
      const hosts = host ? [host] : cfg.hosts.map((h) => h.domain);
      for (const h of hosts) for (const j of await storage.accounts.list(h)) process.stdout.write(`${j}\n`);
    } finally {
      await storage.close();
    }
  });

// XMPP tokens (issue 9): bearer tokens for SASL OAUTHBEARER, written to the database (no server needed).
async function withTokens<T>(fn: (tokens: TokenService, accounts: AccountService, cfg: Readonly<ResolvedConfig>, storage: Storage) => Promise<T>): Promise<T> {
  const cfg = config();
  const storage = await openConfiguredStorage(cfg);
  try {
    const tokens = new TokenService(storage.tokens, cfg.auth.tokens);
    const accounts = new AccountService(storage, cfg.auth.scramIterations, directoriesFor(cfg, silentLogger()), tokens);
    try {
      return await fn(tokens, accounts, cfg, storage);
    } finally {
      await accounts.close();
    }
  } finally {
    await storage.close();
  }
}

const token = program.command('token').description('issue, list and revoke XMPP tokens (SASL OAUTHBEARER)');
token
  .command('issue <jid>')
  .description('issue a token that logs <jid> in on its host; the token is printed once and never stored')
  .option('--lifetime <seconds>', 'lifetime in seconds (default: auth.tokens.lifetimeSeconds)')
  .option('--label <text>', 'a note shown by `token list`')
  .action(async (jid: string, o: { lifetime?: string; label?: string }) => {
    await withTokens(async (tokens, accounts, cfg) => {
      checkHost(cfg, jid);
      const j = parseAccountJid(jid);
      if (!(await accounts.exists(j.bare))) throw new AccountError(`no account ${j.bare}`);
      const lifetimeSeconds = o.lifetime === undefined ? undefined : Number(o.lifetime);
      const t = await tokens.issue(j.bare, j.domain, { lifetimeSeconds, label: o.label, issuer: 'cli' });
      process.stdout.write(`token: ${t.token}\nid: ${t.id}\nexpires: ${new Date(t.expiresAt).toISOString()}\n`);
    });
  });
token
  .command('list <jid>')
  .description("list a user's tokens (ids, expiry, state; never the tokens themselves)")
  .action(async (jid: string) => {
    await withTokens(async (tokens) => {
      const now = Date.now();
      for (const t of await tokens.list(parseAccountJid(jid).bare)) {
        const state = t.revokedAt !== null ? 'revoked' : t.expiresAt <= now ? 'expired' : 'valid';
        const label = t.label ? `  ${JSON.stringify(t.label)}` : '';
        process.stdout.write(`${t.id}  ${state}  expires ${new Date(t.expiresAt).toISOString()}  for ${t.audience}${label}\n`);
      }
    });
  });
token
  .command('revoke [id]')
  .description('revoke one token by id, or every token of a user with --all')
  .option('--all <jid>', "revoke all of this user's tokens")
  .action(async (id: string | undefined, o: { all?: string }) => {
    if (!id === !o.all) throw new TokenError('give a token id or --all <jid>');
    await withTokens(async (tokens) => {
      if (o.all) {
        const bare = parseAccountJid(o.all).bare;
        const n = await tokens.revokeAll(bare);
        process.stdout.write(`revoked ${n} token${n === 1 ? '' : 's'} of ${bare}\n`);
        return;
      }
      if (!(await tokens.revoke(id as string))) throw new TokenError(`no unrevoked token ${id}`);
      process.stdout.write(`revoked ${id}\n`);
    });
  });

// Single sign-on (issue 9): the IdP identities bound to an account and its browser sessions, in the database.
const sso = program.command('sso').description('single sign-on: identities bound to accounts, browser sessions');
sso
  .command('identities <jid>')
  .description('list the identity-provider identities (issuer, subject) bound to an account, with their groups')
  .action(async (jid: string) => {
    await withTokens(async (_tokens, _accounts, _cfg, storage) => {
      for (const r of await storage.ssoIdentities.byUser(parseAccountJid(jid).bare)) {
        const groups = r.groups.length ? `  groups ${r.groups.join(',')}` : '';
        process.stdout.write(`${r.provider}  ${r.issuer}  ${r.subject}  last sign-in ${new Date(r.lastLoginAt).toISOString()}${groups}\n`);
      }
    });
  });
sso
  .command('unbind <jid>')
  .description('remove the binding of an account to an issuer (the next sign-in from that issuer binds again from its claims)')
  .requiredOption('--issuer <url>', 'the issuer (OIDC iss, SAML IdP entity ID) as `sso identities` shows it')
  .action(async (jid: string, o: { issuer: string }) => {
    await withTokens(async (_tokens, _accounts, _cfg, storage) => {
      const bare = parseAccountJid(jid).bare;
      const r = (await storage.ssoIdentities.byUser(bare)).find((x) => x.issuer === o.issuer);
      if (!r || !(await storage.ssoIdentities.remove(r.host, r.issuer, r.subject))) throw new AccountError(`${bare} is not bound to an identity of ${o.issuer}`);
      process.stdout.write(`unbound ${bare} from ${r.issuer} (subject ${r.subject})\n`);
    });
  });
sso
  .command('sessions <jid>')
  .description("list a user's browser sessions (ids, provider, times; never the cookies)")
  .action(async (jid: string) => {
    await withTokens(async (_tokens, _accounts, _cfg, storage) => {
      for (const w of await storage.webSessions.list(parseAccountJid(jid).bare)) {
        const times = `since ${new Date(w.createdAt).toISOString()}  last used ${new Date(w.lastSeenAt).toISOString()}  ends ${new Date(w.expiresAt).toISOString()}`;
        process.stdout.write(`${w.id}  ${w.provider}  ${times}  tokens ${w.tokens.length}\n`);
      }
    });
  });
sso
  .command('logout <jid>')
  .description('end every browser session of a user and revoke the XMPP tokens they were given')
  .action(async (jid: string) => {
    await withTokens(async (tokens, _accounts, _cfg, storage) => {
      const bare = parseAccountJid(jid).bare;
      const ended = await storage.webSessions.removeByUser(bare);
      let revoked = 0;
      for (const w of ended) for (const id of w.tokens) if (await tokens.revoke(id)) revoked++;
      process.stdout.write(`ended ${ended.length} browser session${ended.length === 1 ? '' : 's'} of ${bare}, revoked ${revoked} token${revoked === 1 ? '' : 's'}\n`);
    });
  });

// Alerts (issue 7): stored here, delivered by the running server (its poll, or the recipient's next login).
const alert = program.command('alert').description('send alerts (headline messages) and read their delivery reports');
alert
  .command('send')
  .description('store an alert for users, groups or everyone; a running server delivers it to online recipients within its poll interval, the others at their next login')
  .requiredOption('--to <recipients>', 'comma-separated: user@host, group:NAME, everyone')
  .requiredOption('--subject <text>', 'subject')
  .requiredOption('--body <text>', 'message text')
  .option('--url <url>', 'a link (XEP-0066)')
  .option('--priority <level>', 'low, medium or high', 'medium')
  .option('--receipts', 'ask recipients for delivery receipts (XEP-0184)', false)
  .option('--host <domain>', 'the host the alert comes from (default: the first recipient\'s, else the first configured host)')
  .action(async (o: { to: string; subject: string; body: string; url?: string; priority: string; receipts: boolean; host?: string }) => {
    const cfg = config();
    const to = o.to.split(',').map((s) => s.trim()).filter(Boolean);
    const firstJid = to.find((t) => t.includes('@'));
    const host = o.host ?? (firstJid ? firstJid.slice(firstJid.lastIndexOf('@') + 1).toLowerCase() : cfg.hosts[0]?.domain ?? 'localhost');
    if (!(PRIORITIES as readonly string[]).includes(o.priority)) throw new AlertInputError(`--priority must be one of ${PRIORITIES.join(', ')}`);
    const storage = await openConfiguredStorage(cfg);
    try {
      const alertOpts = cfg.modules.alerts;
      const max = typeof alertOpts === 'object' && typeof alertOpts.maxRecipients === 'number' ? alertOpts.maxRecipients : 10000;
      const { alert: a, recipients } = await storeAlert(
        { storage, config: cfg },
        { host, sender: 'cli', to, subject: o.subject, body: o.body, url: o.url ?? null, priority: o.priority as AlertPriority, receipts: o.receipts },
        max,
      );
      process.stdout.write(`alert ${a.id} stored for ${recipients.length} recipient${recipients.length === 1 ? '' : 's'}\n`);
    } finally {
      await storage.close();
    }
  });
alert
  .command('report <id>')
  .description('show who has an alert pending, delivered, and who returned a receipt')
  .action(async (id: string) => {
    const storage = await openConfiguredStorage(config());
    try {
      const a = await storage.alerts.get(id);
      if (!a) throw new AlertInputError(`no alert ${id}`);
      const rows = await storage.alerts.recipients(id);
      const list = (st: string) => rows.filter((r) => r.state === st).map((r) => r.user);
      const lines = [`alert ${a.id} from ${a.sender} at ${new Date(a.createdAt).toISOString()}: ${a.subject}`];
      for (const st of ['pending', 'delivered', 'received']) lines.push(`  ${st}: ${list(st).length}${list(st).length ? ` (${list(st).join(', ')})` : ''}`);
      process.stdout.write(`${lines.join('\n')}\n`);
    } finally {
      await storage.close();
    }
  });

program
  .command('modules')
  .description('list the built-in modules with their XEPs and options (Markdown)')
  .action(() => {
    process.stdout.write(`${modulesReference(builtinModules)}\n`);
  });

program
  .command('check-config')
  .description('validate the configuration and print every error with its path')
  .action(async () => {
    const cfg = config();
    const problems: string[] = [];
    // The access control files too (docs/acl.md): a malformed one would stop `parley start`.
    // Directory groups (LDAP hosts with `groups`) may define any @group: no "not defined" warnings then.
    const directoryGroups = cfg.hosts.some((h) => h.accounts === 'ldap' && h.ldap?.groups);
    const aclCheck = await new FileAccessControl({ directory: cfg.acl.directory, groups: cfg.acl.groups, isLocal: () => true, groupResolver: directoryGroups ? () => undefined : undefined }).reload('check-config');
    problems.push(...aclCheck.errors);
    // Module names and options were checked with the rest of the file (config() above).
    if (problems.length) throw new ConfigError(problems);
    const exposed = dataDirWarning(cfg.dataDir);
    if (exposed) process.stderr.write(`warning: ${exposed}\n`);
    process.stdout.write(`configuration OK: hosts ${cfg.hosts.map((h) => h.domain).join(', ')}; storage ${cfg.storage.type}\n`);
  });

const policy = program.command('policy').description('service entitlements and rights (docs/acl.md)');
policy
  .command('explain')
  .argument('[jid]', 'the user, user@domain')
  .argument('[question]', `an entitlement (${ENTITLEMENTS.join(', ')}) or a right (${SERVICE_RIGHTS.join(', ')}, or a Sun IM name: ${Object.values(SUN_RIGHT_NAMES).join(', ')}); omitted: every one`)
  .description('print whether a user may use a service or holds a right, and the rule that decided (exit 0 allowed, 1 denied, 2 bad input); without a question, every service and right (exit 0)')
  .action(async (rawJid: string | undefined, question: string | undefined) => {
    const questions: readonly (Entitlement | ServiceRight)[] = [...ENTITLEMENTS, ...SERVICE_RIGHTS];
    // Arguments are checked here, not by commander, so that every bad input exits with 2.
    if (!rawJid) throw new ConfigError(['usage: parley policy explain <jid> [<service-or-right>]']);
    const asked: Entitlement | ServiceRight | undefined = question === undefined ? undefined : isEntitlement(question) ? question : rightByName(question);
    if (question !== undefined && !asked) throw new ConfigError([`unknown service or right "${question}": expected one of ${questions.join(', ')} (or a Sun IM name: ${Object.values(SUN_RIGHT_NAMES).join(', ')})`]);
    const jid = Jid.tryParse(rawJid);
    if (!jid?.local) throw new ConfigError([`"${rawJid}" is not a user JID (expected user@domain)`]);
    const cfg = config();
    const host = cfg.hosts.find((h) => h.domain === jid.domain);
    // Groups from identity providers (issue 9) are in the database with the person's binding.
    let idpGroups: string[] = [];
    if (cfg.sso.providers.some((p) => p.host === jid.domain)) {
      const storage = await openConfiguredStorage(cfg);
      try {
        idpGroups = [...new Set((await storage.ssoIdentities.byUser(jid.bare)).flatMap((r) => r.groups))];
      } finally {
        await storage.close();
      }
    }
    const acl = new FileAccessControl({
      directory: cfg.acl.directory,
      groups: cfg.acl.groups,
      isLocal: (d) => cfg.hosts.some((h) => h.domain === d),
      groupResolver: idpGroups.length ? (who) => (who.bare === jid.bare ? idpGroups : undefined) : undefined,
    });
    const report = await acl.reload('policy-explain');
    // A malformed file is not in force for this answer either (the server keeps its previous rules).
    for (const e of report.errors) process.stderr.write(`warning: ${e} (file ignored for this answer)\n`);
    // One line per question: `user: name (other name) ALLOWED by rule`.
    const line = (q: Entitlement | ServiceRight, name: string, other?: string): boolean => {
      const answer = acl.explain(q, jid.toBare());
      process.stdout.write(`${jid.bare}: ${name}${other ? ` (${other})` : ''} ${answer.allowed ? 'ALLOWED' : 'DENIED'} by ${formatRule(answer)}\n`);
      return answer.allowed;
    };
    const sunName = (q: Entitlement | ServiceRight) => (isEntitlement(q) ? undefined : SUN_RIGHT_NAMES[q]);
    let allowed = true;
    // Asked by its Sun name: that name first, the Parley one beside it.
    if (asked) allowed = asked === question ? line(asked, asked) : line(asked, sunName(asked) ?? asked, asked);
    else for (const q of questions) line(q, q, sunName(q));
    if (host?.accounts === 'ldap' && host.ldap?.groups) {
      process.stdout.write(`note: ${host.domain} takes groups from its LDAP directory; offline only configuration groups (acl.groups) are known, so a rule for a directory group may decide differently in the running server\n`);
    }
    process.exitCode = allowed ? 0 : 1;
  });

program
  .command('status')
  .description('show whether the server is running, its ports and session counts')
  .action(() => {
    const cfg = config();
    const path = join(cfg.dataDir, 'status.json');
    if (!existsSync(path)) {
      process.stdout.write('parley is not running (no status file)\n');
      process.exitCode = 3;
      return;
    }
    const st = JSON.parse(readFileSync(path, 'utf8')) as {
      pid: number;
      updatedAt: string;
      sessions: number;
      connections: number;
      ports: unknown;
      hosts: string[];
      storage: string;
      muxes?: MuxStatus[];
    };
    let alive: boolean;
    try {
      process.kill(st.pid, 0); // throws when no such process
      alive = Date.now() - Date.parse(st.updatedAt) < 30_000;
    } catch {
      alive = false;
    }
    if (!alive) {
      process.stdout.write(`parley is not running (last seen ${st.updatedAt}, pid ${st.pid})\n`);
      process.exitCode = 3;
      return;
    }
    process.stdout.write(
      `parley is running (pid ${st.pid})\n  hosts: ${st.hosts.join(', ')}\n  ports: ${JSON.stringify(st.ports)}\n  sessions: ${st.sessions}, connections: ${st.connections}\n  storage: ${st.storage}\n  updated: ${st.updatedAt}\n${formatMuxes(st.muxes ?? [])}`,
    );
  });

/**
 * Signals the running server and waits for the report it writes in answer (a status file whose
 * `generation` grows); prints why when there is none. Exit codes: 3 not running, 1 no report.
 */
async function signalServer<T extends { pid: number; generation: number }>(
  cfg: Readonly<ResolvedConfig>,
  signal: NodeJS.Signals,
  read: () => T | null,
  timeout: string,
  what: string,
): Promise<T | null> {
  const pid = runningPid(cfg);
  if (pid === null) {
    process.stdout.write('parley is not running (no live server process in the status file)\n');
    process.exitCode = 3;
    return null;
  }
  const before = read();
  const since = before?.pid === pid ? before.generation : 0;
  process.kill(pid, signal);
  const deadline = Date.now() + Math.max(1, Number(timeout) || 10) * 1000;
  while (Date.now() < deadline) {
    const st = read();
    if (st && st.pid === pid && st.generation > since) return st;
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stderr.write(`parley: the server (pid ${pid}) did not report ${what} within ${timeout} s; see its log\n`);
  process.exitCode = 1;
  return null;
}

program
  .command('reload')
  .description('make the running server re-read its access control files (docs/acl.md) and print the rules loaded per file')
  .option('--timeout <seconds>', "how long to wait for the server's report", '10')
  .action(async (o: { timeout: string }) => {
    const cfg = config();
    const statusPath = join(cfg.dataDir, ACL_STATUS_FILE);
    const st = await signalServer(cfg, 'SIGHUP', () => readAclStatus(statusPath), o.timeout, 'a reload');
    if (!st) return;
    process.stdout.write(formatAclReport(st));
    process.exitCode = st.errors.length ? 1 : 0;
  });

program
  .command('cache')
  .description('directory cache of LDAP hosts')
  .command('flush')
  .description('make the running server forget every cached directory answer (users, groups, searches), so changes show at once')
  .option('--timeout <seconds>', "how long to wait for the server's report", '10')
  .action(async (o: { timeout: string }) => {
    const cfg = config();
    const path = join(cfg.dataDir, CACHE_STATUS_FILE);
    const read = (): CacheFlushReport | null => {
      try {
        return JSON.parse(readFileSync(path, 'utf8')) as CacheFlushReport;
      } catch {
        return null;
      }
    };
    const st = await signalServer(cfg, 'SIGUSR2', read, o.timeout, 'a flush');
    if (!st) return;
    const lines = st.hosts.length ? st.hosts.map((h) => `  ${h.host}: ${h.entries} entries dropped`) : ['  no host has a directory: nothing to flush'];
    process.stdout.write(`directory caches flushed (pid ${st.pid}):\n${lines.join('\n')}\n`);
  });

program
  .command('ldap')
  .description('LDAP directory tools')
  .command('test')
  .description("check each LDAP host's configuration against its directory and explain what is wrong (exit code 0: all good)")
  .option('--host <domain>', 'only this host')
  .option('--user <name>', 'also look this username up')
  .action(async (o: { host?: string; user?: string }) => {
    const r = await ldapTest(config(), o);
    process.stdout.write(r.report);
    process.exitCode = r.ok ? 0 : 1;
  });

/** The pid of the running server, from dataDir/status.json, or null when it is not alive. */
function runningPid(cfg: Readonly<ResolvedConfig>): number | null {
  try {
    const st = JSON.parse(readFileSync(join(cfg.dataDir, 'status.json'), 'utf8')) as { pid: number; updatedAt: string };
    process.kill(st.pid, 0); // throws when no such process
    return Date.now() - Date.parse(st.updatedAt) < 30_000 ? st.pid : null;
  } catch {
    return null;
  }
}

interface MuxStatus {
  name: string;
  connections: number;
  since: string;
  lastSeenMsAgo: number;
  stats: { pid?: number; rss?: number; cpu?: number } | null;
}

/** The `muxes` section of `parley status`: one line per connected multiplexor with its link health. */
function formatMuxes(muxes: MuxStatus[]): string {
  if (!muxes.length) return '  muxes: none connected\n';
  const lines = muxes.map((m) => {
    // The server drops a link silent for 35 s; 2 missed keepalives (10 s each) already look unwell.
    const health = m.lastSeenMsAgo < 25_000 ? 'healthy' : 'silent';
    const extra = [
      m.stats?.pid !== undefined ? `pid ${m.stats.pid}` : null,
      m.stats?.rss !== undefined ? `rss ${(m.stats.rss / 1048576).toFixed(1)} MiB` : null,
      m.stats?.cpu !== undefined ? `cpu ${m.stats.cpu.toFixed(2)} s` : null,
    ].filter(Boolean);
    return `    ${m.name}: ${m.connections} connection${m.connections === 1 ? '' : 's'}, link ${health} (last seen ${m.lastSeenMsAgo} ms ago, up since ${m.since})${extra.length ? `, ${extra.join(', ')}` : ''}`;
  });
  return `  muxes: ${muxes.length}\n${lines.join('\n')}\n`;
}

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError || err instanceof AccountError || err instanceof AlertInputError || err instanceof TokenError) {
    process.stderr.write(`parley: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`parley: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
