// XEP-0045 Multi-User Chat (v1.35) at `<subdomain>.<host>`:
//   §6 discovery (service identity and features, public rooms in disco#items, room disco#info with
//   the muc_* features and the §6.4 muc#roominfo form), §7.2 entering a room (instant creation,
//   history limits, password, members-only, bans, nickname conflicts, room full, self-presence
//   with 110/100/201, full JIDs to moderators or to all), §7.3 occupant presence updates, §7.4
//   groupchat messages, §7.5 private messages, §7.6 nickname change (303), §7.8.2 mediated
//   invitations and declines, §7.9 subject, §7.14 leaving, §8 moderator use cases (kick, voice,
//   role lists), §9 admin use cases (ban, member list, moderator grant), §10.1 creating (locked
//   until the instant form or a configuration is submitted; cancel destroys), §10.2 configuration
//   (muc#roomconfig, 104 notices), §10.3-§10.7 owner and admin lists, §10.9 destroy with reason
//   and alternate venue, §7.10 nickname registration (jabber:iq:register on the room; in a
//   members-only room a request that admins approve, §9.9) with §7.12 x-roomuser-item and optional
//   nick lock-down (210), §7.13/§8.6 voice requests (requests.ts), status codes 170-173 and 333,
//   §6.3 room directory paged with XEP-0059 and the muc#unique room name (directory.ts).
// Also XEP-0421 occupant-id on presences and messages (HMAC of the real bare JID with a per-room
// secret) and XEP-0410 self-ping (answered by the service for the pinging occupant's own nick).
//
// Hosting: like upload.ts and proxy65.ts, the service is registered with `ctx.service`: the router
// hands it the stanzas for its domains, after the `conferences` entitlement check.
// Rooms live in memory; persistent ones (configuration, affiliations, subject) are also stored
// (MucStore, migration 5) and loaded at start. Every operation on a room runs under a per-room
// lock so that storage awaits cannot interleave two joins or an affiliation change and a join.
//
// Rights: `ctx.acl.allows('room.create')` decides who may create rooms; when an access file
// governs a room, `ctx.acl.venue('room', …)` decides instead of the stored affiliations: MANAGE is
// owner, WRITE member (participant), READ a visitor without affiliation, NONE outcast.
import { randomBytes } from 'node:crypto';
import { clone, Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../../core/module.js';
import { StanzaError, stanzaError } from '../../xmpp/errors.js';
import { Jid } from '../../xmpp/jid.js';
import { NS } from '../../xmpp/ns.js';
import { delayElement, iqPayload, iqResult } from '../../xmpp/stanza.js';
import {
  applyConfigForm,
  configForm,
  NS_MUC,
  NS_MUC_ADMIN,
  NS_MUC_OWNER,
  NS_MUC_USER,
  roomConfigSchema,
  roomFeatures,
  roomInfoForm,
  type ConfigLimits,
  type RoomConfig,
} from './config.js';
import { AFF_RANK, defaultRole, newBucket, Room, type Affiliation, type Occupant, type Role } from './room.js';
import { mucArchiveOptions, roomArchive } from './archive.js';
import { NS_MAM } from '../../xmpp/mam.js';
import { roomVcard } from './vcard.js';
import { readRequestForm, registrationApprovalForm, voiceApprovalForm, type RequestForm } from './requests.js';
import { NS_MUC_UNIQUE, NS_RSM, roomPage, uniqueRoomName } from './directory.js';

const optionsSchema = z
  .object({
    subdomain: z.string().regex(/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label').default('conference').describe('The service JID is <subdomain>.<host> for every local host'),
    name: z.string().min(1).max(100).default('Chatrooms').describe('Name of the service in disco#info and disco#items'),
    maxRooms: z.number().int().min(1).default(10_000).describe('Rooms (temporary and persistent) the service holds in total'),
    maxRoomsPerUser: z.number().int().min(0).default(50).describe('Rooms one account may have created and that still exist (0: no limit)'),
    defaultMaxUsers: z.number().int().min(1).default(100).describe('Occupant limit of a new room (muc#roomconfig_maxusers)'),
    maxUsers: z.number().int().min(1).default(1000).describe('Highest occupant limit an owner may configure'),
    defaultHistoryLength: z.number().int().min(0).default(20).describe('Messages of history a new room sends to joiners'),
    maxHistoryLength: z.number().int().min(0).default(200).describe('Most messages of history a room keeps in memory'),
    maxNameLength: z.number().int().min(1).default(100).describe('Longest room name, in characters'),
    maxDescriptionLength: z.number().int().min(1).default(1000).describe('Longest room description, in characters'),
    maxSubjectLength: z.number().int().min(1).default(1000).describe('Longest room subject, in characters'),
    maxNickLength: z.number().int().min(1).max(1023).default(64).describe('Longest occupant nickname, in characters'),
    maxAffiliations: z.number().int().min(1).default(5000).describe('Affiliations (owners, admins, members, outcasts) one room may hold'),
    messagesPerSecond: z.number().min(0.01).default(2).describe('Sustained groupchat and private message rate per occupant'),
    messageBurst: z.number().int().min(1).default(10).describe('Messages an occupant may send at once before the rate applies'),
    voiceRequestInterval: z.number().int().min(0).default(60).describe('Seconds a visitor must wait between two voice requests in one room (§7.13)'),
    maxPendingRegistrations: z.number().int().min(1).default(100).describe('Registration requests a members-only room keeps waiting for an admin (§9.9)'),
    lockRegisteredNicks: z.boolean().default(false).describe('A user with a registered nick always enters under it (status 210, §7.10) and cannot change it'),
    roomListPageSize: z.number().int().min(1).max(10_000).default(100).describe('Most rooms in one page of the room directory (disco#items, XEP-0059 paging)'),
    archive: mucArchiveOptions,
    maxVcardBytes: z.number().int().min(1).default(65_536).describe('Largest room vCard (XEP-0486 avatar) an owner may store, in bytes of XML'),
    defaults: z
      .object({
        persistent: z.boolean().default(false).describe('New rooms are persistent'),
        public: z.boolean().default(true).describe('New rooms are listed in disco#items'),
        membersOnly: z.boolean().default(false).describe('New rooms are members-only'),
        moderated: z.boolean().default(false).describe('New rooms are moderated'),
        whois: z.enum(['moderators', 'anyone']).default('moderators').describe('Who sees real JIDs in new rooms'),
      })
      .strict()
      .default({ persistent: false, public: true, membersOnly: false, moderated: false, whois: 'moderators' })
      .describe('Configuration of newly created rooms'),
  })
  .strict();

export type MucOptions = z.infer<typeof optionsSchema>;

/** Forwarded iq (§7.5 iq to an occupant): our id -> the requester and its id. */
interface PendingIq {
  requester: string;
  id: string;
  /** The occupant JID the request was addressed to (the reply's `from`). */
  occupantJid: string;
  target: string;
}

export default defineModule({
  name: 'muc',
  xeps: ['0045', '0410', '0421', '0313', '0359', '0486'],
  options: optionsSchema,
  async setup(ctx) {
    const opts = ctx.options;
    const services = ctx.service(opts.subdomain, opts.name, (ev) => routeStanza(ev), { entitlement: 'conferences' });
    const rooms = new Map<string, Room>();
    /** Full JID of a user -> rooms it occupies (for session.closed). */
    const joined = new Map<string, Set<Room>>();
    const locks = new Map<string, Promise<void>>();
    const pendingIqs = new Map<string, PendingIq>();
    const limits: ConfigLimits = {
      maxUsers: opts.maxUsers,
      maxHistory: opts.maxHistoryLength,
      maxNameLength: opts.maxNameLength,
      maxDescriptionLength: opts.maxDescriptionLength,
    };

    const defaultConfig = (): RoomConfig => ({
      name: '',
      description: '',
      persistent: opts.defaults.persistent,
      public: opts.defaults.public,
      membersOnly: opts.defaults.membersOnly,
      moderated: opts.defaults.moderated,
      passwordProtected: false,
      password: '',
      whois: opts.defaults.whois,
      maxUsers: Math.min(opts.defaultMaxUsers, opts.maxUsers),
      changeSubject: false,
      allowInvites: false,
      allowPm: 'anyone',
      historyLength: Math.min(opts.defaultHistoryLength, opts.maxHistoryLength),
      language: 'en',
      enableArchiving: opts.archive.enabled,
      vcard: '',
    });

    // XEP-0313 room archives and XEP-0486 room vCards (archive.ts, vcard.ts).
    const roomMam = roomArchive(ctx, opts.archive, { rightsOf, rooms: () => rooms.values() });
    const roomVcards = roomVcard({ log: ctx.log, rightsOf, persist, statusMessage }, opts.maxVcardBytes);
    roomMam.startRetention();

    // ---- persistent rooms ----------------------------------------------------------------------

    for (const rec of await ctx.storage.muc.listRooms()) {
      const domain = rec.jid.slice(rec.jid.indexOf('@') + 1);
      if (!services.has(domain)) continue; // a host that is no longer configured
      let parsed: unknown;
      try {
        parsed = JSON.parse(rec.config);
      } catch {
        parsed = {};
      }
      const cfg = roomConfigSchema.partial().safeParse(parsed);
      const config = { ...defaultConfig(), ...(cfg.success ? cfg.data : {}), persistent: true };
      if (!cfg.success) ctx.log.warn({ room: rec.jid }, 'stored room configuration invalid: defaults used');
      const room = new Room(rec.jid, config, Buffer.from(rec.secret, 'base64'), rec.creator, rec.createdAt);
      room.subject = rec.subject;
      room.subjectBy = rec.subjectBy;
      for (const a of await ctx.storage.muc.affiliations(rec.jid)) room.affiliations.set(a.jid, { affiliation: a.affiliation, nick: a.nick, reason: a.reason });
      rooms.set(rec.jid, room);
    }

    async function persist(room: Room): Promise<void> {
      if (!room.config.persistent) return;
      await ctx.storage.muc.saveRoom({
        jid: room.jid,
        config: JSON.stringify(room.config),
        subject: room.subject,
        subjectBy: room.subjectBy,
        secret: room.secret.toString('base64'),
        creator: room.creator,
        createdAt: room.createdAt,
      });
    }

    async function persistAll(room: Room): Promise<void> {
      await persist(room);
      for (const [jid, a] of room.affiliations) await ctx.storage.muc.setAffiliation(room.jid, jid, a.affiliation, a.nick, a.reason);
    }

    /** Runs `fn` after every earlier operation on the same room key. */
    function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
      const prev = locks.get(key) ?? Promise.resolve();
      const run = prev.then(fn);
      const tail = run.then(
        () => undefined,
        () => undefined,
      );
      locks.set(key, tail);
      void tail.then(() => {
        if (locks.get(key) === tail) locks.delete(key);
      });
      return run;
    }

    function send(stanza: Element): void {
      ctx.route(stanza).catch((err: unknown) => ctx.log.debug({ err }, 'muc: delivery failed'));
    }

    // ---- rights --------------------------------------------------------------------------------

    /** The affiliation that governs `who`, and whether an access file holds it to the visitor role. */
    function rightsOf(room: Room, bare: string): { aff: Affiliation; visitor: boolean } {
      const who = Jid.tryParse(bare);
      const v = who ? ctx.acl.venue('room', room.jid, who) : null;
      if (v === 'MANAGE') return { aff: 'owner', visitor: false };
      if (v === 'WRITE') {
        const s = room.storedAffiliation(bare);
        return { aff: s === 'owner' || s === 'admin' ? s : 'member', visitor: false };
      }
      if (v === 'READ') return { aff: 'none', visitor: true };
      if (v === 'NONE') return { aff: 'outcast', visitor: false };
      return { aff: room.storedAffiliation(bare), visitor: false };
    }

    function roleFor(room: Room, bare: string): { aff: Affiliation; role: Role; readOnly: boolean } {
      const r = rightsOf(room, bare);
      return { aff: r.aff, role: r.visitor ? 'visitor' : defaultRole(r.aff, room.config.moderated), readOnly: r.visitor };
    }

    // ---- stanza builders -----------------------------------------------------------------------

    const occJid = (room: Room, nick: string) => `${room.jid}/${nick}`;

    /**
     * §15.6 170/171: whether the room is logged. The room archive (archive.ts) owns the setting
     * (muc#roomconfig_enablearchiving); a room without it is not logged.
     */
    const roomLogs = (config: RoomConfig): boolean => config.enableArchiving;

    interface PresenceOpts {
      type?: 'unavailable';
      codes?: number[];
      actor?: string;
      reason?: string;
      newNick?: string;
      destroy?: Element;
    }

    /** The presence of `occ` as `viewer` sees it (§7.2.3/§7.2.4), addressed to `to`. */
    function occupantPresence(room: Room, occ: Occupant, viewer: Occupant | null, to: string, o: PresenceOpts = {}): Element {
      const base = [...occ.sessions.values()].at(-1);
      const p = new Element('presence', { from: occJid(room, occ.nick), to, type: o.type });
      if (base && o.type !== 'unavailable') {
        for (const c of base.children) {
          if (typeof c === 'string') continue;
          const ns = c.attrs.xmlns;
          if (ns === NS_MUC || ns === NS_MUC_USER || ns === NS.OCCUPANT_ID || c.name === 'error') continue;
          p.cnode(clone(c));
        }
      }
      // §7.14: the exit message of an occupant that leaves goes with its unavailable presence.
      if (o.type === 'unavailable' && base?.attrs.type === 'unavailable') for (const st of base.getChildren('status')) p.cnode(clone(st));
      const x = p.c('x', { xmlns: NS_MUC_USER });
      const self = viewer === occ;
      const itemAttrs: Record<string, string> = { affiliation: occ.affiliation, role: occ.role };
      if (self || (viewer && room.seesJids(viewer))) itemAttrs.jid = [...occ.sessions.keys()].at(-1) ?? occ.bare;
      if (o.newNick) itemAttrs.nick = o.newNick;
      const item = x.c('item', itemAttrs);
      if (o.actor) item.c('actor', { nick: o.actor });
      if (o.reason) item.c('reason').t(o.reason);
      if (o.destroy) x.cnode(clone(o.destroy));
      for (const code of o.codes ?? []) x.c('status', { code: String(code) });
      if (self) x.c('status', { code: '110' });
      p.c('occupant-id', { xmlns: NS.OCCUPANT_ID, id: room.occupantId(occ.bare) });
      return p;
    }

    /** Sends `occ`'s presence to every occupant (its own sessions get 110 and `selfCodes`). */
    function broadcastPresence(room: Room, occ: Occupant, o: PresenceOpts = {}, selfCodes: number[] = []): void {
      for (const viewer of room.occupants.values()) {
        for (const to of viewer.sessions.keys()) {
          const codes = viewer === occ ? [...(o.codes ?? []), ...selfCodes] : o.codes;
          send(occupantPresence(room, occ, viewer, to, { ...o, codes }));
        }
      }
    }

    function statusMessage(room: Room, codes: number[]): void {
      for (const occ of room.occupants.values()) {
        for (const to of occ.sessions.keys()) {
          const m = new Element('message', { from: room.jid, to, type: 'groupchat', id: randomBytes(6).toString('hex') });
          const x = m.c('x', { xmlns: NS_MUC_USER });
          for (const c of codes) x.c('status', { code: String(c) });
          send(m);
        }
      }
    }

    function subjectMessage(room: Room, to: string): Element {
      const m = new Element('message', { from: room.subjectBy ? occJid(room, room.subjectBy) : room.jid, to, type: 'groupchat', id: randomBytes(6).toString('hex') });
      m.c('subject').t(room.subject);
      return m;
    }

    // ---- occupants -----------------------------------------------------------------------------

    function addSession(room: Room, occ: Occupant, full: string, presence: Element): void {
      occ.sessions.set(full, presence);
      room.byJid.set(full, occ);
      let set = joined.get(full);
      if (!set) joined.set(full, (set = new Set()));
      set.add(room);
    }

    function dropSession(room: Room, full: string): void {
      const occ = room.byJid.get(full);
      room.byJid.delete(full);
      occ?.sessions.delete(full);
      const set = joined.get(full);
      set?.delete(room);
      if (set && set.size === 0) joined.delete(full);
    }

    /** Removes a whole occupant (all its sessions), telling it and the others (kick, ban, §7.14 leave). */
    function removeOccupant(room: Room, occ: Occupant, o: PresenceOpts, tellSelf = true): void {
      if (tellSelf) for (const to of occ.sessions.keys()) send(occupantPresence(room, occ, occ, to, { ...o, type: 'unavailable' }));
      room.occupants.delete(occ.nick);
      // The sessions go last: the others' copies still need the exit status and the real JID.
      for (const viewer of room.occupants.values()) {
        for (const to of viewer.sessions.keys()) send(occupantPresence(room, occ, viewer, to, { ...o, type: 'unavailable' }));
      }
      for (const full of [...occ.sessions.keys()]) dropSession(room, full);
    }

    /** Temporary rooms go with their last occupant (§10.1.3 also: a locked room its creator left). */
    async function maybeDispose(room: Room): Promise<void> {
      if (room.occupants.size > 0) return;
      if (room.config.persistent && !room.locked) return;
      rooms.delete(room.jid);
      if (room.config.persistent) await ctx.storage.muc.deleteRoom(room.jid);
      await roomMam.clear(room.jid);
    }

    async function leave(room: Room, full: string, status?: Element, codes?: number[]): Promise<void> {
      const occ = room.byJid.get(full);
      if (!occ) return;
      if (occ.sessions.size > 1) {
        // Another session keeps the nick: only this one leaves.
        send(occupantPresence(room, occ, occ, full, { type: 'unavailable', codes }));
        dropSession(room, full);
        return;
      }
      const p = new Element('presence', { type: 'unavailable' });
      if (status) p.cnode(clone(status));
      occ.sessions.set(full, p);
      occ.role = 'none'; // §7.14: the unavailable presence says role='none'
      removeOccupant(room, occ, { codes });
      await maybeDispose(room);
    }

    // ---- entering (§7.2, §10.1) ------------------------------------------------------------------

    async function join(roomJid: Jid, wanted: string, from: Jid, stanza: Element): Promise<void> {
      if (!from.local) throw stanzaError('not-allowed');
      // Surrounding white space would let "bob " pass for "bob": it goes (with 210 below).
      let nick = wanted.trim();
      if ([...nick].length > opts.maxNickLength || nick.trim() === '') throw new StanzaError('modify', 'jid-malformed', 'nickname not acceptable');
      const mucX = stanza.getChild('x', NS_MUC);
      let room = rooms.get(roomJid.bare);
      let created = false;
      if (!room) {
        const venue = ctx.acl.venue('room', roomJid.bare, from.toBare());
        if (venue === 'NONE') throw new StanzaError('auth', 'forbidden');
        if (!ctx.acl.allows('room.create', from.toBare()) && venue !== 'MANAGE') throw new StanzaError('cancel', 'not-allowed', 'you may not create rooms');
        if (rooms.size >= opts.maxRooms) throw new StanzaError('wait', 'resource-constraint', 'too many rooms');
        if (opts.maxRoomsPerUser > 0 && [...rooms.values()].filter((r) => r.creator === from.bare).length >= opts.maxRoomsPerUser) {
          throw new StanzaError('wait', 'resource-constraint', 'you created too many rooms');
        }
        room = new Room(roomJid.bare, defaultConfig(), randomBytes(32), from.bare, Date.now());
        // §10.1.1: a client that does not speak MUC (no <x/>) gets an unlocked instant room (§7.2.1 compatibility).
        room.locked = mucX !== undefined;
        room.affiliations.set(from.bare, { affiliation: 'owner', nick: null, reason: null });
        rooms.set(room.jid, room);
        created = true;
        // A temporary room of the same name that a restart ended left its archive behind: not this room's.
        await roomMam.clear(room.jid);
      } else {
        if (room.locked && room.creator !== from.bare) throw new StanzaError('cancel', 'item-not-found', 'the room is locked until its owner configures it');
        // §7.10 end: a room that locks registered nicks enters the user under its own (210), no error.
        const reserved = room.affiliations.get(from.bare)?.nick;
        if (opts.lockRegisteredNicks && reserved) nick = reserved;
      }
      // §7.2 / §15.6 210: the occupant's nick is not the one it asked for (locked, or normalised).
      const codes210 = nick !== wanted ? [210] : [];
      const codes170 = roomLogs(room.config) ? [170] : [];
      const { aff, role, readOnly } = roleFor(room, from.bare);
      if (aff === 'outcast') throw new StanzaError('auth', 'forbidden', 'you are banned from this room');
      // READ from an access file admits a visitor even to a members-only room: the file governs.
      if (room.config.membersOnly && AFF_RANK[aff] < AFF_RANK.member && !readOnly) throw new StanzaError('auth', 'registration-required', 'members only');
      const existing = room.occupants.get(nick);
      if (existing && existing.bare !== from.bare) throw new StanzaError('cancel', 'conflict', 'nickname in use');
      // §7.2.9: a nickname another user registered is theirs.
      for (const [jid, a] of room.affiliations) {
        if (a.nick === nick && jid !== from.bare) throw new StanzaError('cancel', 'conflict', 'nickname registered by another user');
      }
      if (!existing && room.occupants.size >= room.config.maxUsers && AFF_RANK[aff] < AFF_RANK.admin) {
        throw new StanzaError('wait', 'service-unavailable', 'the room is full');
      }
      if (room.config.passwordProtected && AFF_RANK[aff] < AFF_RANK.owner) {
        const pw = mucX?.getChildText('password') ?? '';
        if (pw !== room.config.password) throw new StanzaError('auth', 'not-authorized', 'password required');
      }

      // A persistent room's history after a restart comes from its archive (§7.2.15).
      await roomMam.hydrate(room, opts.maxHistoryLength);
      if (existing) {
        // Same user, another client, same nick: it shares the occupant (§7.2, multi-session).
        addSession(room, existing, from.full, stanza);
        for (const other of room.occupants.values()) {
          if (other === existing) continue;
          send(occupantPresence(room, other, existing, from.full));
        }
        send(occupantPresence(room, existing, existing, from.full, { codes: [...(room.config.whois === 'anyone' ? [100] : []), ...codes170, ...codes210] }));
        sendHistoryAndSubject(room, from.full, mucX);
        return;
      }

      const occ: Occupant = { nick, bare: from.bare, sessions: new Map(), role, affiliation: aff, bucket: newBucket(opts.messagesPerSecond, opts.messageBurst) };
      // Existing occupants' presences first (§7.2.3), then the new one to everybody, self last.
      for (const other of room.occupants.values()) send(occupantPresence(room, other, occ, from.full));
      room.occupants.set(nick, occ);
      addSession(room, occ, from.full, stanza);
      const selfCodes: number[] = [];
      if (room.config.whois === 'anyone') selfCodes.push(100);
      if (created) selfCodes.push(201);
      selfCodes.push(...codes170, ...codes210);
      broadcastPresence(room, occ, {}, selfCodes);
      if (!created) sendHistoryAndSubject(room, from.full, mucX);
      else send(subjectMessage(room, from.full));
    }

    function sendHistoryAndSubject(room: Room, to: string, mucX: Element | undefined): void {
      const now = Date.now();
      for (const e of room.historyFor(mucX?.getChild('history'), now)) {
        const m = clone(e.stanza);
        m.attrs.to = to;
        m.cnode(delayElement(room.jid, new Date(e.at)));
        send(m);
      }
      send(subjectMessage(room, to));
    }

    // ---- presence --------------------------------------------------------------------------------

    async function onPresence(stanza: Element, to: Jid, from: Jid): Promise<void> {
      const type = stanza.attrs.type;
      const room = rooms.get(to.bare);
      if (type === 'unavailable' || type === 'error') {
        // §14.1: an error presence from an occupant's client removes it, with 333 for everybody.
        if (room) await leave(room, from.full, type === 'unavailable' ? stanza.getChild('status') : undefined, type === 'error' ? [333] : undefined);
        return;
      }
      if (type !== undefined) return; // subscriptions and probes are not for rooms
      if (!to.resource) throw new StanzaError('modify', 'jid-malformed', 'a nickname is required');
      const occ = room?.byJid.get(from.full);
      if (!room || !occ) return join(to, to.resource, from, stanza);
      if (occ.nick === to.resource.trim()) {
        // §7.3 presence update.
        occ.sessions.set(from.full, stanza);
        broadcastPresence(room, occ);
        return;
      }
      // §7.6 nickname change.
      const nick = to.resource.trim();
      if ([...nick].length > opts.maxNickLength || nick === '') throw new StanzaError('modify', 'jid-malformed', 'nickname not acceptable');
      const other = room.occupants.get(nick);
      if (other && other.bare !== from.bare) throw new StanzaError('cancel', 'conflict', 'nickname in use');
      for (const [jid, a] of room.affiliations) {
        if (a.nick === nick && jid !== from.bare) throw new StanzaError('cancel', 'conflict', 'nickname registered by another user');
      }
      if (other || occ.sessions.size > 1) throw new StanzaError('cancel', 'not-acceptable', 'leave with your other clients first');
      if (opts.lockRegisteredNicks && room.affiliations.get(from.bare)?.nick) throw new StanzaError('cancel', 'not-acceptable', 'this room keeps you to your registered nickname');
      broadcastPresence(room, occ, { type: 'unavailable', codes: [303], newNick: nick });
      room.occupants.delete(occ.nick);
      occ.nick = nick;
      room.occupants.set(nick, occ);
      occ.sessions.set(from.full, stanza);
      broadcastPresence(room, occ, {}, nick !== to.resource ? [210] : []);
    }

    // ---- messages --------------------------------------------------------------------------------

    function rate(occ: Occupant): void {
      if (occ.bucket.take(1) > 0) throw new StanzaError('wait', 'resource-constraint', 'you are sending messages too fast');
    }

    async function onMessage(stanza: Element, to: Jid, from: Jid): Promise<void> {
      const type = stanza.attrs.type ?? 'normal';
      if (type === 'error') return;
      const room = rooms.get(to.bare);
      if (!room || room.locked) throw new StanzaError('cancel', 'item-not-found');
      const occ = room.byJid.get(from.full);
      if (to.resource) return privateMessage(room, occ, to.resource, stanza, type);
      if (type === 'groupchat') {
        if (!occ) throw new StanzaError('modify', 'not-acceptable', 'you are not in the room');
        const subject = stanza.getChild('subject');
        if (subject && !stanza.getChild('body')) return changeSubject(room, occ, subject.getText(), stanza);
        if (occ.role === 'visitor' || occ.role === 'none') throw new StanzaError('auth', 'forbidden', 'you have no voice');
        rate(occ);
        const out = await reflect(room, occ, stanza, (m) => roomMam.record(room, from, m));
        if (out.getChild('body')) room.addHistory(out, opts.maxHistoryLength);
        return;
      }
      const form = readRequestForm(stanza);
      if (form) return requestForm(room, occ, from, form);
      const x = stanza.getChild('x', NS_MUC_USER);
      if (x?.getChild('invite')) return invite(room, occ, from, x);
      if (x?.getChild('decline')) return decline(room, from, x);
      throw new StanzaError('modify', 'bad-request', 'send groupchat messages to the room');
    }

    /** §7.4: the message from room/nick to every occupant, with the occupant id; `before` runs ahead of the broadcast (the archive's stanza-id). */
    async function reflect(room: Room, occ: Occupant, stanza: Element, before?: (out: Element) => Promise<void>): Promise<Element> {
      const out = new Element('message', { from: occJid(room, occ.nick), type: 'groupchat', id: stanza.attrs.id, 'xml:lang': stanza.attrs['xml:lang'] });
      for (const c of stanza.children) if (typeof c !== 'string' && c.attrs.xmlns !== NS.OCCUPANT_ID) out.cnode(clone(c));
      out.c('occupant-id', { xmlns: NS.OCCUPANT_ID, id: room.occupantId(occ.bare) });
      if (before) await before(out);
      for (const viewer of room.occupants.values()) {
        for (const jid of viewer.sessions.keys()) {
          const m = clone(out);
          m.attrs.to = jid;
          send(m);
        }
      }
      return out;
    }

    async function changeSubject(room: Room, occ: Occupant, text: string, stanza: Element): Promise<void> {
      // §8.1: moderators always; others only when the room allows it, and never visitors.
      if (occ.role !== 'moderator' && (!room.config.changeSubject || occ.role !== 'participant')) throw new StanzaError('auth', 'forbidden', 'you may not change the subject');
      if ([...text].length > opts.maxSubjectLength) throw new StanzaError('modify', 'not-acceptable', 'subject too long');
      rate(occ);
      room.subject = text;
      room.subjectBy = occ.nick;
      await persist(room);
      await reflect(room, occ, stanza);
    }

    function privateMessage(room: Room, occ: Occupant | undefined, nick: string, stanza: Element, type: string): void {
      if (type === 'groupchat') throw new StanzaError('modify', 'bad-request', 'groupchat messages go to the room');
      if (!occ) throw new StanzaError('modify', 'not-acceptable', 'you are not in the room');
      const target = room.occupants.get(nick);
      if (!target) throw new StanzaError('cancel', 'item-not-found', 'no such occupant');
      const pm = room.config.allowPm;
      if (pm === 'none' || (pm === 'moderators' && occ.role !== 'moderator') || (pm === 'participants' && occ.role === 'visitor')) {
        throw new StanzaError('cancel', 'not-allowed', 'private messages are not allowed here');
      }
      rate(occ);
      const out = new Element('message', { from: occJid(room, occ.nick), type, id: stanza.attrs.id, 'xml:lang': stanza.attrs['xml:lang'] });
      for (const c of stanza.children) if (typeof c !== 'string' && c.attrs.xmlns !== NS.OCCUPANT_ID && c.attrs.xmlns !== NS_MUC_USER) out.cnode(clone(c));
      out.c('x', { xmlns: NS_MUC_USER });
      out.c('occupant-id', { xmlns: NS.OCCUPANT_ID, id: room.occupantId(occ.bare) });
      for (const jid of target.sessions.keys()) {
        const m = clone(out);
        m.attrs.to = jid;
        send(m);
      }
    }

    /** §7.8.2 mediated invitation. */
    async function invite(room: Room, occ: Occupant | undefined, from: Jid, x: Element): Promise<void> {
      if (!occ) throw new StanzaError('modify', 'not-acceptable', 'you are not in the room');
      const invites = x.getChildren('invite');
      if (invites.length > 10) throw new StanzaError('modify', 'policy-violation', 'too many invitations at once');
      const mayInvite = room.config.allowInvites || AFF_RANK[occ.affiliation] >= AFF_RANK.admin || occ.role === 'moderator';
      if (!mayInvite) throw new StanzaError('auth', 'forbidden', 'you may not invite');
      for (const inv of invites) {
        const target = Jid.tryParse(inv.attrs.to);
        if (!target) throw stanzaError('jid-malformed');
        // §9.3: in a members-only room an invitation by an admin makes the invitee a member.
        if (room.config.membersOnly && AFF_RANK[occ.affiliation] >= AFF_RANK.admin && room.storedAffiliation(target.bare) === 'none') {
          await setAffiliation(room, target.bare, 'member', null);
        }
        const reason = inv.getChildText('reason');
        const m = new Element('message', { from: room.jid, to: target.full, id: randomBytes(6).toString('hex') });
        const ox = m.c('x', { xmlns: NS_MUC_USER });
        const oi = ox.c('invite', { from: from.bare });
        if (reason) oi.c('reason').t(reason.slice(0, 1000));
        if (room.config.passwordProtected) ox.c('password').t(room.config.password);
        m.c('body').t(`${from.bare} invites you to the room ${room.jid}${reason ? `: ${reason.slice(0, 1000)}` : ''}`);
        send(m);
      }
    }

    /** §7.8.2: a decline goes to the inviter, from the room. */
    function decline(room: Room, from: Jid, x: Element): void {
      const d = x.getChild('decline') as Element;
      const target = Jid.tryParse(d.attrs.to);
      if (!target) throw stanzaError('jid-malformed');
      const m = new Element('message', { from: room.jid, to: target.full, id: randomBytes(6).toString('hex') });
      const od = m.c('x', { xmlns: NS_MUC_USER }).c('decline', { from: from.bare });
      const reason = d.getChildText('reason');
      if (reason) od.c('reason').t(reason.slice(0, 1000));
      send(m);
    }

    // ---- request forms: §7.13/§8.6 voice, §9.9 registration ----------------------------------------

    async function requestForm(room: Room, occ: Occupant | undefined, from: Jid, form: RequestForm): Promise<void> {
      if (form.kind === 'voice-request') return voiceRequest(room, occ);
      if (form.kind === 'voice-approval') return voiceApproval(room, occ, form);
      return registrationApproval(room, from, form);
    }

    /** §7.13: a visitor asks for voice; §8.6: the room sends the approval form to every moderator. */
    function voiceRequest(room: Room, occ: Occupant | undefined): void {
      if (!occ) throw new StanzaError('modify', 'not-acceptable', 'you are not in the room');
      if (occ.role !== 'visitor') throw new StanzaError('cancel', 'not-allowed', 'only visitors request voice');
      const now = Date.now();
      const wait = opts.voiceRequestInterval * 1000;
      const last = room.voiceRequests.get(occ.bare);
      if (last !== undefined && now - last < wait) throw new StanzaError('wait', 'resource-constraint', 'you requested voice a moment ago');
      if (room.voiceRequests.size >= room.config.maxUsers) for (const [b, t] of room.voiceRequests) if (now - t >= wait) room.voiceRequests.delete(b);
      room.voiceRequests.set(occ.bare, now);
      const realJid = [...occ.sessions.keys()].at(-1) ?? occ.bare;
      for (const mod of room.occupants.values()) {
        if (mod.role !== 'moderator') continue;
        for (const to of mod.sessions.keys()) {
          const m = new Element('message', { from: room.jid, to, id: randomBytes(6).toString('hex') });
          m.cnode(voiceApprovalForm(realJid, occ.nick));
          send(m);
        }
      }
    }

    /** §8.6: a moderator's submitted approval form grants voice as §8.3 would. */
    function voiceApproval(room: Room, occ: Occupant | undefined, form: Extract<RequestForm, { kind: 'voice-approval' }>): void {
      if (!occ || occ.role !== 'moderator') throw new StanzaError('auth', 'forbidden', 'only moderators approve voice requests');
      if (!form.allow) return;
      const target = room.occupants.get(form.nick);
      // The nick may have changed hands since the request: muc#jid, when given, must still match.
      if (!target || (form.jid !== '' && Jid.tryParse(form.jid)?.bare !== target.bare)) throw new StanzaError('cancel', 'item-not-found', 'no such occupant');
      room.voiceRequests.delete(target.bare);
      if (target.role !== 'visitor') return; // another moderator was quicker
      target.role = 'participant';
      broadcastPresence(room, target, { actor: occ.nick });
    }

    /** §9.9: the request waits; every admin and owner gets the approval form (once per request). */
    function requestRegistration(room: Room, bare: string, nick: string): void {
      const again = room.pendingRegistrations.has(bare);
      if (!again && room.pendingRegistrations.size >= opts.maxPendingRegistrations) throw new StanzaError('wait', 'resource-constraint', 'too many registration requests are waiting');
      room.pendingRegistrations.set(bare, nick);
      if (again) return;
      let told = 0;
      for (const [jid, a] of room.affiliations) {
        if ((a.affiliation !== 'admin' && a.affiliation !== 'owner') || !jid.includes('@')) continue;
        if (++told > 50) break;
        // To the bare JID: an admin who is offline finds it later (the body is for clients without forms).
        const m = new Element('message', { from: room.jid, to: jid, id: randomBytes(6).toString('hex') });
        m.c('body').t(`${bare} asks to register with ${room.jid} as ${nick}.`);
        m.cnode(registrationApprovalForm(bare, nick));
        send(m);
      }
    }

    async function registrationApproval(room: Room, from: Jid, form: Extract<RequestForm, { kind: 'registration-approval' }>): Promise<void> {
      if (AFF_RANK[affOf(room, from)] < AFF_RANK.admin) throw new StanzaError('auth', 'forbidden', 'only admins and owners approve registrations');
      const bare = Jid.tryParse(form.jid)?.bare;
      const nick = bare === undefined ? undefined : room.pendingRegistrations.get(bare);
      if (bare === undefined || nick === undefined) throw new StanzaError('cancel', 'item-not-found', 'no such registration request');
      room.pendingRegistrations.delete(bare);
      if (!form.allow || rightsOf(room, bare).aff === 'outcast') return;
      if (nickReservedByOther(room, nick, bare)) throw new StanzaError('cancel', 'conflict', 'the nickname was registered by another user meanwhile');
      await registerNick(room, bare, nick, actorOf(room, from) ?? undefined);
    }

    // ---- affiliations and roles (§8, §9, §10) ------------------------------------------------------

    async function setAffiliation(room: Room, bare: string, aff: Affiliation, reason: string | null, actor?: Occupant): Promise<void> {
      if (aff !== 'none' && !room.affiliations.has(bare) && room.affiliations.size >= opts.maxAffiliations) {
        throw new StanzaError('wait', 'resource-constraint', 'too many affiliations');
      }
      // §9.1: a ban also frees the outcast's registered nickname.
      const nick = aff === 'outcast' ? null : (room.affiliations.get(bare)?.nick ?? null);
      if (aff === 'none') room.affiliations.delete(bare);
      else room.affiliations.set(bare, { affiliation: aff, nick, reason });
      if (room.config.persistent) await ctx.storage.muc.setAffiliation(room.jid, bare, aff, nick, reason);
      // Occupants of that user (or of that domain, for a server ban) change at once.
      for (const occ of [...room.occupants.values()]) {
        if (occ.bare !== bare && !(aff === 'outcast' && !bare.includes('@') && occ.bare.endsWith(`@${bare}`))) continue;
        const r = roleFor(room, occ.bare);
        occ.affiliation = r.aff;
        const o: PresenceOpts = { actor: actor?.nick, reason: reason ?? undefined };
        if (r.aff === 'outcast') {
          occ.role = 'none';
          removeOccupant(room, occ, { ...o, codes: [301] });
        } else if (room.config.membersOnly && AFF_RANK[r.aff] < AFF_RANK.member) {
          occ.role = 'none';
          removeOccupant(room, occ, { ...o, codes: [321] });
        } else {
          occ.role = r.role === 'visitor' && occ.role === 'participant' && !room.config.moderated ? 'participant' : r.role;
          broadcastPresence(room, occ, o);
        }
      }
    }

    function actorOf(room: Room, from: Jid): Occupant | null {
      return room.byJid.get(from.full) ?? null;
    }

    /** The requester's affiliation, whether or not it is in the room. */
    function affOf(room: Room, from: Jid): Affiliation {
      return rightsOf(room, from.bare).aff;
    }

    async function adminSet(room: Room, from: Jid, query: Element): Promise<void> {
      const items = query.getChildren('item');
      if (items.length === 0) throw stanzaError('bad-request');
      if (items.length > 100) throw new StanzaError('modify', 'policy-violation', 'too many items');
      const actor = actorOf(room, from);
      const myAff = affOf(room, from);
      // Validate every item before applying any (§9: the change is all or nothing).
      const plan: (() => Promise<void>)[] = [];
      const owners = new Set(room.owners());
      for (const item of items) {
        const reason = item.getChildText('reason')?.slice(0, 1000) ?? null;
        if (item.attrs.role !== undefined) {
          const role = item.attrs.role as Role;
          if (!['moderator', 'participant', 'visitor', 'none'].includes(role)) throw stanzaError('bad-request');
          if (!actor || actor.role !== 'moderator') throw new StanzaError('auth', 'forbidden', 'moderators only');
          const target = item.attrs.nick ? room.occupants.get(item.attrs.nick) : undefined;
          if (!target) throw new StanzaError('cancel', 'item-not-found', 'no such occupant');
          // §8.2/§8.4/§9.7: nobody changes the role of an admin or owner, and only admins grant or revoke moderator.
          if (AFF_RANK[target.affiliation] >= AFF_RANK.admin && target !== actor) throw new StanzaError('cancel', 'not-allowed', 'you cannot change the role of an admin or owner');
          if ((role === 'moderator' || target.role === 'moderator') && AFF_RANK[myAff] < AFF_RANK.admin) throw new StanzaError('cancel', 'not-allowed', 'admins only');
          if (AFF_RANK[target.affiliation] > AFF_RANK[myAff]) throw new StanzaError('cancel', 'not-allowed');
          plan.push(async () => {
            if (!room.occupants.has(target.nick)) return;
            if (role === 'none') {
              target.role = 'none';
              removeOccupant(room, target, { codes: [307], actor: actor.nick, reason: reason ?? undefined });
              await maybeDispose(room);
              return;
            }
            target.role = role;
            broadcastPresence(room, target, { actor: actor.nick, reason: reason ?? undefined });
          });
          continue;
        }
        const aff = item.attrs.affiliation as Affiliation | undefined;
        if (!aff || !(aff in AFF_RANK)) throw stanzaError('bad-request');
        let bare: string | undefined;
        if (item.attrs.jid) {
          const j = Jid.tryParse(item.attrs.jid);
          if (!j) throw stanzaError('jid-malformed');
          bare = j.bare;
        } else if (item.attrs.nick) {
          bare = room.occupants.get(item.attrs.nick)?.bare;
        }
        if (!bare) throw new StanzaError('cancel', 'item-not-found', 'no such user');
        if (AFF_RANK[myAff] < AFF_RANK.admin) throw new StanzaError('auth', 'forbidden', 'admins and owners only');
        // §9.1: admins and owners cannot ban themselves.
        if (aff === 'outcast' && bare === from.bare) throw new StanzaError('cancel', 'conflict', 'you cannot ban yourself');
        const current = room.storedAffiliation(bare);
        // §9/§10: admins manage members and outcasts of lower standing; owners manage everything.
        if (myAff !== 'owner' && (AFF_RANK[current] >= AFF_RANK.admin || aff === 'admin' || aff === 'owner')) {
          throw new StanzaError('cancel', 'not-allowed', 'owners only');
        }
        if (current === 'owner' && aff !== 'owner') {
          owners.delete(bare);
          if (owners.size === 0) throw new StanzaError('cancel', 'conflict', 'a room needs an owner');
        }
        if (aff === 'owner') owners.add(bare);
        const b = bare;
        plan.push(async () => {
          await setAffiliation(room, b, aff, reason, actor ?? undefined);
          await maybeDispose(room);
        });
      }
      for (const step of plan) await step();
    }

    function adminGet(room: Room, from: Jid, query: Element): Element {
      const items = query.getChildren('item');
      if (items.length !== 1) throw stanzaError('bad-request');
      const item = items[0] as Element;
      const q = new Element('query', { xmlns: NS_MUC_ADMIN });
      const myAff = affOf(room, from);
      if (item.attrs.affiliation) {
        const aff = item.attrs.affiliation;
        if (aff !== 'owner' && aff !== 'admin' && aff !== 'member' && aff !== 'outcast') throw stanzaError('bad-request');
        // §9.5/§9.8/§10.5/§10.8: member and outcast lists for admins, admin and owner lists for owners.
        const need = aff === 'owner' || aff === 'admin' ? AFF_RANK.owner : AFF_RANK.admin;
        if (AFF_RANK[myAff] < need) throw new StanzaError('auth', 'forbidden');
        for (const [jid, a] of room.affiliations) {
          if (a.affiliation !== aff) continue;
          const it = q.c('item', { affiliation: aff, jid, nick: a.nick ?? undefined });
          if (a.reason) it.c('reason').t(a.reason);
        }
        return q;
      }
      const role = item.attrs.role;
      if (role !== 'moderator' && role !== 'participant') throw stanzaError('bad-request');
      const actor = actorOf(room, from);
      if (!actor || actor.role !== 'moderator') throw new StanzaError('auth', 'forbidden');
      for (const occ of room.occupants.values()) {
        if (occ.role === role) q.c('item', { role, nick: occ.nick, affiliation: occ.affiliation, jid: [...occ.sessions.keys()][0] });
      }
      return q;
    }

    // ---- owner (§10) -------------------------------------------------------------------------------

    async function ownerSet(room: Room, from: Jid, query: Element): Promise<void> {
      if (affOf(room, from) !== 'owner') throw new StanzaError('auth', 'forbidden', 'owners only');
      const destroyEl = query.getChild('destroy');
      if (destroyEl) return destroy(room, destroyEl);
      const x = query.getChild('x', NS.DATA_FORMS);
      if (!x) throw stanzaError('bad-request');
      if (x.attrs.type === 'cancel') {
        // §10.1.3: cancelling the initial configuration destroys the room.
        if (room.locked) await destroy(room, new Element('destroy'));
        return;
      }
      if (x.attrs.type !== 'submit') throw stanzaError('bad-request');
      const old = room.config;
      const next = x.getChildren('field').length === 0 ? old : applyConfigForm(old, x, limits);
      room.config = next;
      const wasLocked = room.locked;
      room.locked = false;
      if (next.persistent && (!old.persistent || wasLocked)) await persistAll(room);
      else if (next.persistent) await persist(room);
      else if (old.persistent) await ctx.storage.muc.deleteRoom(room.jid);
      if (next.historyLength < room.history.length) room.history = room.history.slice(-Math.max(next.historyLength, 0));
      if (wasLocked) return;
      // §10.2.1 notices: 170/171 (logging) and 172/173 (anonymity) for a change of the room's
      // privacy profile, 104 for any other change (and for a submission that changed nothing).
      // 174 (fully anonymous) never applies: such rooms are not offered (removed from XEP-0045).
      const codes: number[] = [];
      if (roomLogs(old) !== roomLogs(next)) codes.push(roomLogs(next) ? 170 : 171);
      if (old.whois !== next.whois) codes.push(next.whois === 'anyone' ? 172 : 173);
      const otherChange = (Object.keys(next) as (keyof RoomConfig)[]).some((k) => k !== 'whois' && k !== 'enableArchiving' && next[k] !== old[k]);
      if (otherChange || codes.length === 0) codes.push(104);
      statusMessage(room, codes);
      if (old.whois !== next.whois) {
        // What others may see changed: everybody gets the occupant list again.
        for (const occ of room.occupants.values()) broadcastPresence(room, occ);
      }
      if (next.membersOnly && !old.membersOnly) {
        for (const occ of [...room.occupants.values()]) {
          if (AFF_RANK[occ.affiliation] < AFF_RANK.member) removeOccupant(room, occ, { codes: [322] });
        }
      }
      if (next.moderated !== old.moderated) {
        for (const occ of room.occupants.values()) {
          const r = roleFor(room, occ.bare).role;
          if (occ.affiliation === 'none' && occ.role !== 'moderator' && occ.role !== r) {
            occ.role = r;
            broadcastPresence(room, occ);
          }
        }
      }
      await maybeDispose(room);
    }

    /** §10.9 destroy: every occupant is told (with the alternate venue), then the room goes. */
    async function destroy(room: Room, destroyEl: Element): Promise<void> {
      const d = new Element('destroy');
      const alt = Jid.tryParse(destroyEl.attrs.jid);
      if (alt) d.attrs.jid = alt.bare;
      const reason = destroyEl.getChildText('reason');
      if (reason) d.c('reason').t(reason.slice(0, 1000));
      for (const occ of [...room.occupants.values()]) {
        occ.affiliation = 'none';
        occ.role = 'none';
        for (const to of occ.sessions.keys()) {
          const p = occupantPresence(room, occ, occ, to, { type: 'unavailable', destroy: d });
          // §10.9: the item carries no real JID and no 110 here.
          const x = p.getChild('x', NS_MUC_USER) as Element;
          x.children = x.children.filter((c) => typeof c === 'string' || c.name !== 'status');
          delete (x.getChild('item') as Element).attrs.jid;
          send(p);
        }
        for (const full of [...occ.sessions.keys()]) dropSession(room, full);
      }
      room.occupants.clear();
      rooms.delete(room.jid);
      await ctx.storage.muc.deleteRoom(room.jid);
      await roomMam.clear(room.jid);
    }

    // ---- iq --------------------------------------------------------------------------------------

    function serviceInfo(): Element {
      const q = new Element('query', { xmlns: NS.DISCO_INFO });
      q.c('identity', { category: 'conference', type: 'text', name: opts.name });
      for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS_MUC, NS.PING, NS.OCCUPANT_ID, NS_MUC_UNIQUE, NS_RSM, NS.VCARD]) q.c('feature', { var: f });
      return q;
    }

    function roomInfo(room: Room): Element {
      const q = new Element('query', { xmlns: NS.DISCO_INFO });
      q.c('identity', { category: 'conference', type: 'text', name: room.config.name || room.jid.slice(0, room.jid.indexOf('@')) });
      for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS.PING, NS.OCCUPANT_ID, NS.REGISTER, ...roomFeatures(room.config)]) q.c('feature', { var: f });
      q.cnode(roomInfoForm(room.config, room.occupants.size, room.subject));
      roomMam.extendInfo(room, q);
      roomVcards.extendInfo(room, q);
      return q;
    }

    /** §7.12: the user's registered nick as an identity name, or an empty answer. */
    function reservedNick(room: Room, from: Jid): Element {
      const q = new Element('query', { xmlns: NS.DISCO_INFO, node: 'x-roomuser-item' });
      const nick = room.affiliations.get(from.bare)?.nick;
      if (nick) q.c('identity', { category: 'conference', type: 'text', name: nick });
      return q;
    }

    async function roomIq(room: Room | undefined, type: 'get' | 'set', payload: Element, from: Jid): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (!room) throw new StanzaError('cancel', 'item-not-found', 'no such room');
      const visible = !room.locked || room.creator === from.bare;
      if (type === 'get' && ns === NS.DISCO_INFO && payload.name === 'query') {
        if (visible && payload.attrs.node === 'x-roomuser-item') return reservedNick(room, from);
        if (!visible || payload.attrs.node) throw stanzaError('item-not-found');
        return roomInfo(room);
      }
      if (type === 'get' && ns === NS.DISCO_ITEMS && payload.name === 'query') {
        if (!visible || payload.attrs.node) throw stanzaError('item-not-found');
        // §6.5: occupants are not listed (semi-anonymous rooms would leak nicknames to non-occupants).
        return new Element('query', { xmlns: NS.DISCO_ITEMS });
      }
      if (type === 'get' && ns === NS.PING && payload.name === 'ping') return undefined;
      if (ns === NS_MUC_OWNER && payload.name === 'query') {
        if (type === 'get') {
          if (affOf(room, from) !== 'owner') throw new StanzaError('auth', 'forbidden', 'owners only');
          const q = new Element('query', { xmlns: NS_MUC_OWNER });
          q.cnode(configForm(room.config, limits));
          return q;
        }
        await ownerSet(room, from, payload);
        return undefined;
      }
      if (ns === NS.REGISTER && payload.name === 'query') return register(room, type, payload, from);
      if (ns === NS_MUC_ADMIN && payload.name === 'query') {
        if (type === 'get') return adminGet(room, from, payload);
        await adminSet(room, from, payload);
        return undefined;
      }
      if (ns === NS.VCARD && payload.name === 'vCard') return roomVcards.iq(room, type, payload, from);
      if (ns === NS_MAM) return roomMam.iq(room, type, payload, from);
      throw stanzaError('service-unavailable');
    }

    /**
     * §7.10 registering with a room: the form (a nickname), or the registered nick; submitting it
     * makes the user a member with that nick reserved. In a members-only room the submission is a
     * request that an admin or owner approves (§9.9).
     */
    async function register(room: Room, type: 'get' | 'set', payload: Element, from: Jid): Promise<Element> {
      const current = room.affiliations.get(from.bare);
      const q = new Element('query', { xmlns: NS.REGISTER });
      if (type === 'get') {
        if (current?.nick) {
          q.c('registered');
          q.c('username').t(current.nick);
          return q;
        }
        const form = q.c('x', { xmlns: NS.DATA_FORMS, type: 'form' });
        form.c('title').t('Nickname registration');
        form.c('field', { var: 'FORM_TYPE', type: 'hidden' }).c('value').t('http://jabber.org/protocol/muc#register');
        form.c('field', { var: 'muc#register_roomnick', type: 'text-single', label: 'Nickname' }).c('required');
        return q;
      }
      if (payload.getChild('remove')) {
        // Cancelling a registration (§7.10 end): back to no affiliation unless it is a stronger one.
        if (current?.affiliation === 'member') await setAffiliation(room, from.bare, 'none', null);
        else if (current) {
          current.nick = null;
          if (room.config.persistent) await ctx.storage.muc.setAffiliation(room.jid, from.bare, current.affiliation, null, current.reason);
        }
        return q;
      }
      const x = payload.getChild('x', NS.DATA_FORMS);
      // §7.10: no (submitted) data form is a bad request.
      if (!x || x.attrs.type !== 'submit') throw new StanzaError('modify', 'bad-request', 'submit the registration form');
      const nick = x.getChildren('field').find((f) => f.attrs.var === 'muc#register_roomnick')?.getChildText('value')?.trim() ?? '';
      if (!nick || [...nick].length > opts.maxNickLength || Jid.tryParse(`${room.jid}/${nick}`) === null) throw new StanzaError('modify', 'not-acceptable', 'nickname not acceptable');
      const aff = rightsOf(room, from.bare).aff;
      if (aff === 'outcast') throw new StanzaError('auth', 'forbidden');
      if (nickReservedByOther(room, nick, from.bare)) throw new StanzaError('cancel', 'conflict', 'nickname registered by another user');
      const taken = room.occupants.get(nick);
      if (taken && taken.bare !== from.bare) throw new StanzaError('cancel', 'conflict', 'nickname in use');
      // §9.9: membership of a members-only room is an admin's decision; the request waits for one.
      if (room.config.membersOnly && AFF_RANK[aff] < AFF_RANK.member) requestRegistration(room, from.bare, nick);
      else await registerNick(room, from.bare, nick);
      return q;
    }

    function nickReservedByOther(room: Room, nick: string, bare: string): boolean {
      for (const [jid, a] of room.affiliations) if (a.nick === nick && jid !== bare) return true;
      return false;
    }

    /** §7.10: the user becomes a member (unless it is more already) with `nick` reserved. */
    async function registerNick(room: Room, bare: string, nick: string, actor?: Occupant): Promise<void> {
      if (!room.affiliations.has(bare)) await setAffiliation(room, bare, 'member', null, actor);
      const entry = room.affiliations.get(bare);
      if (entry) {
        entry.nick = nick;
        if (room.config.persistent) await ctx.storage.muc.setAffiliation(room.jid, bare, entry.affiliation, nick, entry.reason);
      }
    }

    /** An iq to room/nick: XEP-0410 self-ping, otherwise §7.5 forwarding to the occupant (ids rewritten). */
    function occupantIq(room: Room | undefined, stanza: Element, to: Jid, from: Jid, payload: Element): void {
      const sender = room?.byJid.get(from.full);
      if (!room || !sender) throw new StanzaError('cancel', 'not-acceptable', 'you are not in the room');
      const target = room.occupants.get(to.resource);
      if (!target) throw new StanzaError('cancel', 'item-not-found', 'no such occupant');
      if (payload.attrs.xmlns === NS.PING && payload.name === 'ping' && target === sender) {
        send(iqResult(stanza));
        return;
      }
      if (pendingIqs.size >= 10_000) throw new StanzaError('wait', 'resource-constraint');
      const id = randomBytes(9).toString('base64url');
      const dest = [...target.sessions.keys()].at(-1) as string;
      pendingIqs.set(id, { requester: from.full, id: stanza.attrs.id ?? '', occupantJid: to.full, target: dest });
      setTimeout(() => pendingIqs.delete(id), 60_000).unref();
      const fwd = new Element('iq', { type: stanza.attrs.type, id, from: occJid(room, sender.nick), to: dest });
      fwd.cnode(clone(payload));
      send(fwd);
    }

    function iqReply(stanza: Element, from: Jid): void {
      const p = pendingIqs.get(stanza.attrs.id ?? '');
      if (!p || p.target !== from.full) return;
      pendingIqs.delete(stanza.attrs.id as string);
      const reply = new Element('iq', { type: stanza.attrs.type, id: p.id, from: p.occupantJid, to: p.requester });
      for (const c of stanza.children) if (typeof c !== 'string') reply.cnode(clone(c));
      send(reply);
    }

    async function serviceIq(type: 'get' | 'set', payload: Element, host: string): Promise<Element | undefined> {
      const ns = payload.attrs.xmlns;
      if (type === 'get' && ns === NS.DISCO_INFO && payload.name === 'query') {
        if (payload.attrs.node) throw stanzaError('item-not-found');
        return serviceInfo();
      }
      if (type === 'get' && ns === NS.DISCO_ITEMS && payload.name === 'query') {
        if (payload.attrs.node) throw stanzaError('item-not-found');
        // §6.3: public rooms only, in a stable order so that XEP-0059 pages follow each other.
        const domain = `${opts.subdomain}.${host}`;
        const listed = [...rooms.values()]
          .filter((r) => r.config.public && !r.locked && r.jid.endsWith(`@${domain}`))
          .map((r) => ({ jid: r.jid, name: r.config.name }))
          .sort((x, y) => (x.jid < y.jid ? -1 : x.jid > y.jid ? 1 : 0));
        return roomPage(listed, payload.getChild('set', NS_RSM), opts.roomListPageSize);
      }
      if (type === 'get' && ns === NS_MUC_UNIQUE && payload.name === 'unique') {
        const domain = `${opts.subdomain}.${host}`;
        return new Element('unique', { xmlns: NS_MUC_UNIQUE }).t(uniqueRoomName((local) => rooms.has(`${local}@${domain}`)));
      }
      if (type === 'get' && ns === NS.PING && payload.name === 'ping') return undefined;
      throw stanzaError('service-unavailable');
    }

    // ---- routing -----------------------------------------------------------------------------------

    /** Every stanza for conference.<host> (the service itself, a room, or an occupant). */
    async function routeStanza({ stanza, to, from, host }: { stanza: Element; to: Jid; from: Jid | null; host: string }): Promise<void> {
      if (!from) return;
      if (!to.local) {
        if (stanza.name !== 'iq') {
          if (stanza.name === 'message' && stanza.attrs.type !== 'error') throw stanzaError('service-unavailable');
          return;
        }
        const type = stanza.attrs.type;
        if (type !== 'get' && type !== 'set') return;
        if (to.resource) throw stanzaError('service-unavailable');
        const payload = iqPayload(stanza);
        if (!payload || payload === 'many') throw stanzaError('bad-request');
        await ctx.route(iqResult(stanza, await serviceIq(type, payload, host)));
        return;
      }
      await withLock(to.bare, async () => {
        if (stanza.name === 'presence') return onPresence(stanza, to, from);
        if (stanza.name === 'message') return onMessage(stanza, to, from);
        if (stanza.name !== 'iq') throw stanzaError('bad-request');
        const type = stanza.attrs.type;
        if (type === 'result' || type === 'error') {
          if (to.resource) iqReply(stanza, from);
          return;
        }
        if (type !== 'get' && type !== 'set') throw stanzaError('bad-request');
        const payload = iqPayload(stanza);
        if (!payload || payload === 'many') throw stanzaError('bad-request');
        const room = rooms.get(to.bare);
        if (to.resource) return occupantIq(room, stanza, to, from, payload);
        const result = await roomIq(room, type, payload, from);
        send(iqResult(stanza, result));
      });
    }

    // The people of a room, for features that address a room's audience (polls, alerts): its
    // occupants and its members, admins and owners. Only one of them (or an administrator) may ask.
    ctx.fold('venue.audience', (ev) => {
      if (ev.kind !== 'room' || ev.members) return ev;
      const room = rooms.get(ev.venue);
      if (!room || room.locked) return ev;
      const people = new Set<string>();
      for (const o of room.occupants.values()) people.add(o.bare);
      for (const [j, a] of room.affiliations) if (j.includes('@') && AFF_RANK[a.affiliation] >= AFF_RANK.member) people.add(j);
      if (ev.asker && !people.has(ev.asker.bare) && !ctx.acl.allows('admin', ev.asker)) throw new StanzaError('auth', 'forbidden', `you are not a member of ${ev.venue}`);
      return { ...ev, members: [...people] };
    });

    // XEP-0045 §15.6 status 332: occupants are told the service is going away, before their sessions close.
    ctx.hook('server.stopping', async () => {
      const out: Promise<void>[] = [];
      for (const room of rooms.values()) {
        for (const occ of room.occupants.values()) {
          occ.role = 'none';
          for (const to of occ.sessions.keys()) out.push(ctx.route(occupantPresence(room, occ, occ, to, { type: 'unavailable', codes: [332] })).catch(() => undefined));
        }
      }
      await Promise.all(out);
      return undefined;
    });

    // A session that ends leaves its rooms (a hibernated XEP-0198 session keeps its place).
    ctx.hook('session.closed', async ({ session }) => {
      const full = session.jid?.full;
      if (!full) return undefined;
      const set = joined.get(full);
      if (!set) return undefined;
      for (const room of [...set]) await withLock(room.jid, () => leave(room, full));
      return undefined;
    });

    ctx.onUnload(() => {
      rooms.clear();
      joined.clear();
      pendingIqs.clear();
    });
  },
});
