// XEP-0055 Jabber Search (v1.3): a user directory at `<subdomain>.<host>` for every local host,
// listed in the host's disco#items, with disco#info identity directory/user and the feature
// jabber:iq:search. §2 (Use Cases): an iq get returns the search fields, an iq set with field values
// returns <item jid=...> results (an empty <query/> when nothing matches). §3 (Extensibility): the
// same get also carries a jabber:x:data form with FORM_TYPE jabber:iq:search (§6.2 field names
// first/last/nick/email, plus this server's own fields); a submitted form is answered with a
// type='result' form (<reported/> and one <item/> per match).
//
// Hosts with `accounts: ldap` search the directory through ctx.directory(host): each field searches
// one attribute (hosts.*.ldap.searchFields; `user` is the user attribute), as a substring match
// (`(attr=*value*)`, the value escaped per RFC 4515), all filled fields together (AND), inside the
// configured user filter. The legacy form maps first/last/email to the fields of those names and
// nick to `user`. Hosts with internal accounts search usernames only, by substring over the host's
// account list (storage.accounts.list: read whole, fine for the hosts internal accounts are for).
//
// Error choices (the XEP names none):
//  - a requester who is not an account of the host the service belongs to: forbidden (auth).
//  - no field filled in: not-acceptable (modify), the request is understood but gives nothing to
//    search on; an unknown field: bad-request.
//  - the directory not answering: remote-server-timeout (wait): RFC 6120 §8.3.3.17 covers a service
//    "needed to fulfill a request" that cannot be reached, and `wait` tells clients to retry;
//    service-unavailable would say (type cancel) that there is no search service at all.
//  - results beyond maxResults are cut (the XEP has no paging); the directory's own size limit may
//    cut them further.
import { Element } from 'ltx';
import { z } from 'zod';
import { defineModule } from '../core/module.js';
import { escapeFilterValue, type DirectoryEntry } from '../core/directory.js';
import { dataForm, findForm, formValues, type FieldSpec } from '../xmpp/dataforms.js';
import { stanzaError } from '../xmpp/errors.js';
import { escapeLocalpart, Jid } from '../xmpp/jid.js';
import { NS } from '../xmpp/ns.js';
import { answerServiceIq } from '../xmpp/service-iq.js';

export const NS_SEARCH = 'jabber:iq:search';
/** The legacy (§2) fields, in the order of the schema. */
const LEGACY = ['first', 'last', 'nick', 'email'] as const;
/** Labels of the fields XEP-0055 §6.2 registers and of the ones this module always has. */
const LABELS: Record<string, string> = { user: 'Username', name: 'Full Name', first: 'Given Name', last: 'Family Name', nick: 'Nickname', email: 'Email Address' };
/** Longest value a client may search for (characters). */
const MAX_VALUE = 256;

const optionsSchema = z
  .object({
    subdomain: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'a DNS label')
      .default('search')
      .describe('The search service JID is <subdomain>.<host> for every host'),
    maxResults: z.number().int().min(1).max(1000).default(50).describe('Most results one search returns'),
  })
  .strict();

/** A search field: its form var and the LDAP attribute it searches (null: usernames of internal accounts). */
interface Field {
  name: string;
  attribute: string | null;
}

interface Hit {
  jid: string;
  values: Record<string, string>;
}

function firstValue(e: DirectoryEntry, attr: string): string | null {
  const key = Object.keys(e.attributes).find((k) => k.toLowerCase() === attr.toLowerCase());
  return (key ? e.attributes[key]?.[0] : undefined) ?? null;
}

export default defineModule({
  name: 'search',
  xeps: ['0055'],
  options: optionsSchema,
  setup(ctx) {
    const opts = ctx.options;

    /** The fields of one host: `user` first, then the configured directory fields. */
    function fieldsOf(host: string): Field[] {
      const dir = ctx.directory(host);
      const ldap = ctx.config.hosts.find((h) => h.domain === host)?.ldap;
      if (!dir || !ldap) return [{ name: 'user', attribute: null }];
      return [{ name: 'user', attribute: dir.userAttribute }, ...Object.entries(ldap.searchFields).map(([name, attribute]) => ({ name, attribute }))];
    }

    /** The legacy element a field answers to (nick is the username), or null. */
    const legacyOf = (f: Field): string | null => (f.name === 'user' ? 'nick' : (LEGACY as readonly string[]).includes(f.name) ? f.name : null);
    const label = (name: string) => LABELS[name] ?? name;

    function discoInfo(): Element {
      const q = new Element('query', { xmlns: NS.DISCO_INFO });
      q.c('identity', { category: 'directory', type: 'user', name: 'User Search' });
      for (const f of [NS.DISCO_INFO, NS.DISCO_ITEMS, NS_SEARCH]) q.c('feature', { var: f });
      return q;
    }

    function searchForm(host: string): Element {
      const fields = fieldsOf(host);
      const q = new Element('query', { xmlns: NS_SEARCH });
      q.c('instructions').t('Fill in one or more fields to search for users (parts of words match).');
      for (const f of fields) {
        const legacy = legacyOf(f);
        if (legacy) q.c(legacy);
      }
      q.cnode(
        dataForm('form', {
          title: `Users of ${host}`,
          instructions: 'Fill in one or more fields; users matching all of them are listed.',
          formType: NS_SEARCH,
          fields: fields.map((f): FieldSpec => ({ var: f.name, type: 'text-single', label: label(f.name) })),
        }),
      );
      return q;
    }

    /** Field name -> value wanted, from either variant; `form` says which one to answer with. */
    function criteria(payload: Element, host: string): { wanted: Map<Field, string>; form: boolean } {
      const fields = fieldsOf(host);
      const wanted = new Map<Field, string>();
      const add = (f: Field | undefined, name: string, raw: string) => {
        if (!f) throw stanzaError('bad-request', `unknown search field ${name}`);
        const v = raw.trim();
        if (v.length > MAX_VALUE) throw stanzaError('not-acceptable', `search values are limited to ${MAX_VALUE} characters`);
        if (v) wanted.set(f, v);
      };
      const x = findForm(payload);
      if (x) {
        if (x.attrs.type !== 'submit') throw stanzaError('bad-request', 'expected a submitted form');
        for (const [name, values] of formValues(x)) {
          if (name === 'FORM_TYPE') {
            if (values[0] !== NS_SEARCH) throw stanzaError('bad-request', `FORM_TYPE must be ${NS_SEARCH}`);
            continue;
          }
          add(fields.find((f) => f.name === name), name, values.join(' '));
        }
      } else {
        for (const el of payload.getChildElements()) {
          if (el.name === 'instructions') continue;
          add(fields.find((f) => legacyOf(f) === el.name), el.name, el.getText());
        }
      }
      if (wanted.size === 0) throw stanzaError('not-acceptable', 'fill in at least one search field');
      return { wanted, form: !!x };
    }

    async function searchDirectory(host: string, wanted: Map<Field, string>): Promise<Hit[]> {
      const dir = ctx.directory(host);
      if (!dir) return [];
      const fields = fieldsOf(host);
      const terms = [...wanted].map(([f, v]) => `(${f.attribute}=*${escapeFilterValue(v)}*)`).join('');
      let entries: DirectoryEntry[];
      try {
        entries = await dir.search({
          filter: `(&${dir.userFilter}${terms})`,
          attributes: [...new Set(fields.map((f) => f.attribute as string))],
          sizeLimit: opts.maxResults,
        });
      } catch (err) {
        ctx.log.warn({ err, host }, 'directory search failed');
        throw stanzaError('remote-server-timeout', 'the user directory is not answering');
      }
      const hits: Hit[] = [];
      for (const e of entries.slice(0, opts.maxResults)) {
        const user = firstValue(e, dir.userAttribute);
        const jid = user === null ? null : toJid(user, host);
        if (!jid) continue;
        const values: Record<string, string> = {};
        for (const f of fields) {
          const v = firstValue(e, f.attribute as string);
          if (v !== null) values[f.name] = v;
        }
        hits.push({ jid, values });
      }
      return hits;
    }

    async function searchAccounts(host: string, wanted: Map<Field, string>): Promise<Hit[]> {
      const needle = [...wanted.values()][0]?.toLowerCase() ?? '';
      const hits: Hit[] = [];
      for (const bare of await ctx.storage.accounts.list(host)) {
        const user = bare.slice(0, bare.lastIndexOf('@'));
        if (!user.toLowerCase().includes(needle)) continue;
        hits.push({ jid: bare, values: { user } });
        if (hits.length >= opts.maxResults) break;
      }
      return hits;
    }

    /** The JID of a directory username; null when it is no valid localpart (it could not log in). */
    function toJid(user: string, host: string): string | null {
      try {
        return Jid.of(escapeLocalpart(user), host).bare; // XEP-0106: alice@example.com -> alice\40example.com
      } catch {
        return null;
      }
    }

    function results(host: string, hits: Hit[], form: boolean): Element {
      const q = new Element('query', { xmlns: NS_SEARCH });
      const fields = fieldsOf(host);
      if (form) {
        const x = dataForm('result', { formType: NS_SEARCH, fields: [] });
        const reported = x.c('reported');
        reported.c('field', { var: 'jid', label: 'Jabber ID', type: 'jid-single' });
        for (const f of fields) reported.c('field', { var: f.name, label: label(f.name), type: 'text-single' });
        for (const h of hits) {
          const item = x.c('item');
          item.c('field', { var: 'jid' }).c('value').t(h.jid);
          for (const f of fields) item.c('field', { var: f.name }).c('value').t(h.values[f.name] ?? '');
        }
        q.cnode(x);
        return q;
      }
      for (const h of hits) {
        const item = q.c('item', { jid: h.jid });
        for (const f of fields) {
          const legacy = legacyOf(f);
          if (legacy && h.values[f.name] !== undefined) item.c(legacy).t(h.values[f.name] as string);
        }
      }
      return q;
    }

    async function handle(payload: Element, type: 'get' | 'set', from: Jid, host: string): Promise<Element | undefined> {
      if (payload.name !== 'query' || payload.attrs.xmlns !== NS_SEARCH) return undefined;
      // The directory is for the host's own people: not other hosts' users, not remote ones.
      if (!from.local || from.domain !== host) throw stanzaError('forbidden', `only users of ${host} may search it`);
      if (type === 'get') return searchForm(host);
      const { wanted, form } = criteria(payload, host);
      const hits = ctx.directory(host) ? await searchDirectory(host, wanted) : await searchAccounts(host, wanted);
      return results(host, hits, form);
    }

    ctx.service(opts.subdomain, 'User Search', ({ stanza, to, from, host }) =>
      answerServiceIq({ stanza, to, from, route: ctx.route, log: ctx.log, what: 'search', discoInfo, handle: (p, type, f) => handle(p, type, f, host) }),
    );
  },
});
