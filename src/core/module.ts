// The module contract (DESIGN.md §3). A feature registers everything through its context; the
// context records each registration and undoes it on unload.
import type { Element } from 'ltx';
import type { z } from 'zod';
import type { Jid } from '../xmpp/jid.js';
import type { Storage } from '../storage/types.js';
import type { Logger } from './logger.js';
import type { FoldMap, HookMap, HookResult } from './hooks.js';
import type { ResolvedConfig } from './config.js';
import type { C2SSession } from './session.js';
import type { SessionRegistry } from './sessions.js';
import type { DiscoRegistry } from './disco.js';
import type { HttpMethod } from './http.js';
import type { AccessControl, Entitlement } from './acl.js';
import type { UserDirectory } from './directory.js';
import type { RequestHandler } from 'express';

export type IqType = 'get' | 'set';

/** Where an iq handler answers: the server's own domain, an account's bare JID, or both. */
export type IqTarget = 'server' | 'account' | 'both';

export interface IqRequest {
  stanza: Element;
  payload: Element;
  from: Jid;
  to: Jid;
  /** The sending session, when the iq came from a local client. */
  session?: C2SSession;
  /** The iq is from the account it is addressed to (a client talking to its own account). */
  self: boolean;
}

/** A stanza for a service hosted inside the server (see ModuleContext.service). */
export type ServiceHandler = (ev: { stanza: Element; to: Jid; from: Jid | null; host: string }) => void | Promise<void>;

export interface LocalService {
  /** The service's domain, `<subdomain>.<host>`. */
  jid: string;
  name: string;
  /** The entitlement a user needs to see it in disco#items (issue 9). */
  entitlement?: Entitlement;
}

export interface ServiceOptions {
  /**
   * The entitlement (issue 9) a local user needs: without it the service is absent from the
   * host's disco#items and, unless `gate` is false, the router answers `forbidden` for it.
   */
  entitlement?: Entitlement;
  /** false: only hide the service from disco; the module checks finer actions itself (polls). */
  gate?: boolean;
}

export type IqHandler = (req: IqRequest) => Element | undefined | Promise<Element | undefined>;

export interface DiscoIdentity {
  category: string;
  type: string;
  name?: string;
}

export interface ModuleDefinition<O extends z.ZodType = z.ZodType> {
  name: string;
  xeps?: string[];
  /** Options schema; its defaults apply when the module has no entry in parley.yaml. */
  options: O;
  setup(ctx: ModuleContext<z.infer<O>>): void | Promise<void>;
}

export function defineModule<O extends z.ZodType>(def: ModuleDefinition<O>): ModuleDefinition<O> {
  return def;
}

/** What the server offers modules. Implemented by the Server (src/core/server.ts). */
export interface ModuleHost {
  readonly config: Readonly<ResolvedConfig>;
  readonly storage: Storage;
  readonly sessions: SessionRegistry;
  readonly log: Logger;
  isLocalHost(domain: string): boolean;
  hostNames(): string[];
  /** Routes a stanza that already carries `from` and `to`. */
  route(stanza: Element): Promise<void>;
  /** Sends an iq from the server and resolves its result (rejects with StanzaError on an error reply or timeout). */
  /**
   * Sends an iq and resolves its result (rejects with its error, or on timeout). `onRouted` is
   * called once the request has been routed (written to a local session or handed to the remote
   * path), before any answer: a caller may wait for that without waiting for the answer.
   */
  request(iq: Element, timeoutMs?: number, onRouted?: () => void): Promise<Element>;
  /** Whether an account exists (cached briefly). */
  accountExists(bare: string): Promise<boolean>;
  /** Forgets the cached existence of an account (after a module created or removed it). */
  invalidateAccount(bare: string): void;
  /** Service-wide and per-venue rights (access control files, issue 7). */
  readonly acl: AccessControl;
  /** The directory a host's accounts live in (issue 8: `accounts: ldap`), or undefined for internal accounts. */
  directory(host: string): UserDirectory | undefined;
  /** XEP-0198: delivers a message a session received but never acknowledged (see Server.redeliver). */
  redeliver(stanza: Element): Promise<void>;
}

export interface ModuleContext<O = unknown> extends ModuleHost {
  readonly name: string;
  readonly options: O;
  addFeature(ns: string, target?: IqTarget): void;
  addIdentity(identity: DiscoIdentity): void;
  iq(type: IqType, ns: string, name: string, handler: IqHandler, target?: IqTarget): void;
  hook<K extends keyof HookMap & string>(name: K, fn: (event: HookMap[K]) => HookResult | Promise<HookResult>, priority?: number): void;
  fold<K extends keyof FoldMap & string>(name: K, fn: (value: FoldMap[K]) => FoldMap[K] | Promise<FoldMap[K]>, priority?: number): void;
  onUnload(fn: () => void | Promise<void>): void;
  /**
   * Runs `task` every `intervalMs` (and once at start with `atStart`) on unref'd timers, never two
   * runs at once; a failure is logged with `what`; stopped when the module unloads.
   */
  every(intervalMs: number, what: string, task: () => Promise<void>, opts?: { atStart?: boolean }): void;
  /** Adds an HTTP route to the web container (served on its HTTP and HTTPS ports when they are on). */
  httpRoute(method: HttpMethod, path: string, handler: RequestHandler): void;
  /**
   * Hosts a service at `<subdomain>.<host>` for every local host (conference rooms, news channels,
   * upload, the SOCKS5 proxy): the router hands it every stanza addressed to those domains (a thrown
   * StanzaError is answered like any routing error), and the host's disco#items lists it.
   * Resolves domain -> the local host it serves.
   */
  service(subdomain: string, name: string, handle: ServiceHandler, opts?: ServiceOptions): ReadonlyMap<string, string>;
  /** The services hosted under one local host (for its disco#items). */
  servicesOf(host: string): readonly LocalService[];
  /** Identities and features every module declared (for disco#info and caps). */
  discoRegistry(): DiscoRegistry;
  /** Namespaces that have iq handlers for a target. */
  iqNamespaces(target: 'server' | 'account'): string[];
  /** Fires a hook (see HookBus.fire). */
  fire<K extends keyof HookMap & string>(name: K, event: HookMap[K]): Promise<boolean>;
  foldValue<K extends keyof FoldMap & string>(name: K, value: FoldMap[K]): Promise<FoldMap[K]>;
}
