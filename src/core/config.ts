// Configuration: one YAML file (parley.yaml), validated once at start with a schema and frozen.
// Every error is reported with its path (`parley check-config`). Every limit has a default in code.
import { readFileSync, existsSync } from 'node:fs';
import { resolve, dirname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { Jid } from '../xmpp/jid.js';
import { isAddressOrCidr, isLocalLink } from './addresses.js';

const port = z.number().int().min(0).max(65535);


/** An LDAP attribute name (RFC 4512 descr). */
const ldapAttr = /^[A-Za-z][A-Za-z0-9-]*$/;

/** LDAP directory of a host (issue 8; src/auth/ldap/). Passwords never leave the directory. */
export const ldapSchema = z
  .object({
    urls: z
      .array(z.string().regex(/^ldaps?:\/\/[^/\s]+\/?$/, 'expected ldap://host[:port] or ldaps://host[:port]'))
      .min(1)
      .describe('Directory servers, tried in order (failover)'),
    startTls: z.boolean().default(false).describe('Upgrade ldap:// connections with StartTLS (ldaps:// is TLS from the start)'),
    tls: z
      .object({
        ca: z.string().optional().describe('PEM file (or PEM text) of the CA that signed the directory certificate (default: the system CAs)'),
        verify: z.boolean().default(true).describe('Verify the directory certificate and its name (turn off only for tests)'),
      })
      .strict()
      .prefault({}),
    bindDn: z.string().optional().describe('Service account that searches the directory (absent: anonymous search)'),
    bindPassword: z.string().optional().describe('Password of the service account'),
    base: z.string().min(1).describe('Base DN of user searches, e.g. ou=people,dc=example,dc=com'),
    userAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).default('uid').describe('Attribute holding the XMPP username (uid, mail, sAMAccountName, ...)'),
    displayNameAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).default('cn').describe('Attribute holding the display name'),
    userFilter: z
      .string()
      .regex(/^\(.*\)$/, 'expected an LDAP filter in parentheses')
      .default('(objectClass=inetOrgPerson)')
      .describe('Filter every user entry must match; users it excludes (e.g. disabled ones) cannot log in'),
    roster: z
      .enum(['database', 'directory'])
      .default('database')
      .describe("Where contact lists live: Parley's database, or the parleyRosterItem attribute of each user entry (docs/ldap.md; needs docs/ldap/parley.schema)"),
    // Registration into the directory (XEP-0077 with hosts[].registration.enabled; docs/ldap.md).
    registration: z
      .object({
        rdnAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).optional().describe('Attribute naming new entries (their RDN; default: userAttribute)'),
        base: z.string().min(1).optional().describe('Where new entries are created (default: base)'),
        objectClasses: z.array(z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/)).min(1).default(['inetOrgPerson']).describe('Object classes of new entries'),
        attributes: z
          .record(z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/), z.union([z.string(), z.array(z.string())]))
          .default({ cn: '{username}', sn: '{username}' })
          .describe('Fixed attributes of new entries; {username} is replaced by the username'),
      })
      .strict()
      .prefault({})
      .describe('Entries created by in-band registration (the user attribute is set to the username, the password through the Password Modify operation)'),
    sizeLimit: z.number().int().min(1).default(1000).describe('Most entries one directory search returns (user search, group expansion); larger answers are cut and logged'),
    timeouts: z
      .object({
        connectMs: z.number().int().min(100).default(5000).describe('TCP (and TLS) connection timeout'),
        bindMs: z.number().int().min(100).default(5000).describe('Bind timeout'),
        searchMs: z.number().int().min(100).default(10000).describe('Search timeout'),
      })
      .strict()
      .prefault({}),
    cache: z
      .object({
        ttlSeconds: z.number().min(0).default(300).describe('How long a directory answer is used before it is asked again (aging)'),
        negativeTtlSeconds: z.number().min(0).default(60).describe('How long "no such user" is remembered'),
        maxEntries: z.number().int().min(1).default(10000).describe('Entries kept before the least recently used are evicted (expiration)'),
      })
      .strict()
      .prefault({}),
    // User search (XEP-0055, src/modules/search.ts): `user` (the user attribute) is always a field.
    searchFields: z
      .record(z.string().regex(/^(?!user$|jid$)[a-z][a-z0-9-]*$/, 'a lower-case field name other than user and jid'), z.string().regex(ldapAttr))
      .default({ name: 'cn', first: 'givenName', last: 'sn', email: 'mail' })
      .describe('User search fields and the attribute each one searches (substring match); first, last and email also serve the legacy form'),
    // vCards of directory users (XEP-0054, src/modules/vcard-directory.ts): vCard element -> attribute.
    vcard: z
      .object({
        fullName: z.string().regex(ldapAttr).optional().describe('FN (default: displayNameAttribute)'),
        given: z.string().regex(ldapAttr).default('givenName').describe('N/GIVEN'),
        family: z.string().regex(ldapAttr).default('sn').describe('N/FAMILY'),
        email: z.string().regex(ldapAttr).default('mail').describe('EMAIL/USERID'),
        phone: z.string().regex(ldapAttr).default('telephoneNumber').describe('TEL/NUMBER'),
        title: z.string().regex(ldapAttr).default('title').describe('TITLE'),
        orgName: z.string().regex(ldapAttr).default('o').describe('ORG/ORGNAME'),
        orgUnit: z.string().regex(ldapAttr).default('ou').describe('ORG/ORGUNIT'),
        photo: z.string().regex(ldapAttr).default('jpegPhoto').describe('PHOTO (JPEG bytes, sent as BINVAL)'),
        localEdits: z
          .boolean()
          .default(false)
          .describe('Let users store their own vCard, the directory fields taking precedence (default: refused with not-allowed)'),
      })
      .strict()
      .prefault({})
      .describe('vCards (XEP-0054) of directory users, filled from these attributes'),
    groups: z
      .object({
        base: z.string().min(1).describe('Base DN of group searches, e.g. ou=groups,dc=example,dc=com'),
        filter: z
          .string()
          .regex(/^\(.*\)$/, 'expected an LDAP filter in parentheses')
          .default('(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup)(objectClass=groupOfURLs))')
          .describe('Filter every group entry must match (which object classes are groups)'),
        nameAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).default('cn').describe('Attribute holding the group name (what shared rosters and @group in ACL files use)'),
        displayNameAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).default('cn').describe('Attribute shown as the roster group of a shared group (cn, description, ...)'),
        memberAttributes: z.array(z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/)).default(['member', 'uniqueMember']).describe('Attributes holding member DNs (users or nested groups)'),
        memberUidAttributes: z.array(z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/)).default(['memberUid']).describe('Attributes holding member usernames (posixGroup)'),
        memberUrlAttribute: z.string().regex(/^[A-Za-z][A-Za-z0-9-]*$/).default('memberURL').describe('Attribute holding the LDAP URLs of a dynamic group (groupOfURLs)'),
        nestingDepth: z.number().int().min(0).max(10).default(3).describe('Levels of groups inside groups followed (0: none); cycles are cut'),
        maxGroups: z.number().int().min(1).default(1000).describe('Most group entries read from the group base'),
        shared: z
          .union([z.literal('*'), z.array(z.string().min(1))])
          .default([])
          .describe("Groups whose members see each other in their rosters (shared roster groups): '*' for all, or a list of group names"),
      })
      .strict()
      .optional()
      .describe('Directory groups (absent: no groups): shared roster groups and @group principals of the access control files'),
  })
  .strict()
  .refine((l) => !l.bindDn === !l.bindPassword, { message: 'bindDn and bindPassword go together' });

export type LdapConfig = z.infer<typeof ldapSchema>;

/** How a claim or attribute of the identity provider becomes part of a Parley identity (issue 9). */
const identityMapSchema = z
  .object({
    localpart: z
      .string()
      .default('preferred_username')
      .describe('Claim (OIDC) or attribute (SAML; `nameID` for the NameID) whose value becomes the user part of the JID (XEP-0106 escaped; a trailing @<host> is dropped)'),
    displayName: z.string().optional().describe('Claim or attribute holding the display name'),
    groups: z.string().optional().describe('Claim or attribute listing the groups (policy @groups)'),
    linkBoundAccounts: z
      .boolean()
      .default(false)
      .describe("Let a first sign-in through this provider take an account already bound to another provider's identity (the same people at two IdPs you trust equally)"),
  })
  .strict()
  .prefault({});

const providerName = z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'expected a short name: lower-case letters, digits and "-"');

const oidcProviderSchema = z
  .object({
    type: z.literal('oidc'),
    name: providerName.describe('Name of the provider in URLs (/sso/oidc/<name>/callback) and logs'),
    host: z.string().min(1).describe('The XMPP host people sign in to with this provider'),
    label: z.string().optional().describe('What the sign-in page shows (default: the name)'),
    issuer: z.string().url().describe('The OpenID provider issuer URL (discovery at <issuer>/.well-known/openid-configuration)'),
    clientId: z.string().min(1),
    clientSecret: z.string().optional().describe('Client secret (absent: a public client, PKCE only)'),
    scopes: z.array(z.string()).default(['openid', 'profile', 'email']),
    allowHttp: z.boolean().default(false).describe('Allow an http:// issuer (tests, labs; never in production)'),
    identity: identityMapSchema,
    jit: z.boolean().default(false).describe('Create the account at first sign-in when it does not exist (internal-account hosts)'),
    bearer: z
      .object({
        audience: z.string().min(1).describe('The `aud` access tokens for XMPP carry (a resource indicator or the client id)'),
      })
      .strict()
      .optional()
      .describe("Accept this provider's JWT access tokens in SASL OAUTHBEARER (XEP-0493 style), verified against its JWKS"),
  })
  .strict();

const samlProviderSchema = z
  .object({
    type: z.literal('saml'),
    name: providerName.describe('Name of the provider in URLs (/sso/saml/<name>/acs) and logs'),
    host: z.string().min(1).describe('The XMPP host people sign in to with this provider'),
    label: z.string().optional().describe('What the sign-in page shows (default: the name)'),
    entryPoint: z.string().url().describe("The IdP's single sign-on URL (HTTP-Redirect binding)"),
    logoutUrl: z.string().url().optional().describe("The IdP's single logout URL (absent: no SAML single logout)"),
    idpIssuer: z.string().min(1).describe("The IdP's entity ID: the Issuer its responses must carry"),
    idpCerts: z.array(z.string().min(1)).min(1).describe('IdP signing certificates (PEM text or file paths; several during a key rotation)'),
    spEntityId: z.string().optional().describe('Our entity ID (default: the metadata URL); the audience assertions must name'),
    spKey: z.string().optional().describe('PEM private key (or path) to sign requests and for metadata (default: none, requests unsigned)'),
    spCert: z.string().optional().describe('PEM certificate (or path) matching spKey'),
    allowMutableNameId: z
      .boolean()
      .default(false)
      .describe('Accept NameIDs that are not persistent (e-mail, unspecified): only for an IdP that never gives a NameID to somebody else'),
    clockSkewSeconds: z.number().int().min(0).max(600).default(60).describe('Tolerated clock difference with the IdP'),
    requestTtlSeconds: z.number().int().min(30).max(3600).default(600).describe('How long a sign-in request may wait for its response (InResponseTo)'),
    maxBodyBytes: z.number().int().min(4096).max(4194304).default(262144).describe('Largest POST the assertion consumer accepts'),
    identity: identityMapSchema,
    jit: z.boolean().default(false).describe('Create the account at first sign-in when it does not exist (internal-account hosts)'),
  })
  .strict();

export const ssoSchema = z
  .object({
    baseUrl: z
      .string()
      .url()
      .regex(/^https:\/\//, 'expected an https:// URL')
      .optional()
      .describe('Public https:// URL of the web container that identity providers send people back to (default: http.publicUrl); required when providers are configured'),
    returnUrls: z
      .array(z.string().url())
      .default([])
      .describe('Where a sign-in or sign-out may send the browser afterwards (exact match; `<baseUrl>/` and the sign-in page `<baseUrl>/signin/` are always allowed)'),
    sessionHours: z.number().min(0.1).max(720).default(8).describe('Absolute lifetime of a browser session'),
    idleMinutes: z.number().int().min(1).max(1440).default(60).describe('A browser session unused this long ends'),
    flowMinutes: z.number().int().min(1).max(60).default(10).describe('How long a sign-in may take at the identity provider'),
    providers: z.array(z.discriminatedUnion('type', [oidcProviderSchema, samlProviderSchema])).default([]).describe('OpenID Connect and SAML identity providers'),
  })
  .strict()
  .prefault({})
  .describe('Single sign-on (issue 9): browser sign-in with OpenID Connect or SAML 2.0, then XMPP with a token');

export type SsoConfig = z.infer<typeof ssoSchema>;
export type SsoProviderConfig = SsoConfig['providers'][number];
export type OidcProviderConfig = z.infer<typeof oidcProviderSchema>;
export type SamlProviderConfig = z.infer<typeof samlProviderSchema>;

export const hostSchema = z
  .object({
    domain: z.string().min(1).describe('The virtual host domain, e.g. example.com'),
    accounts: z.enum(['internal', 'ldap']).default('internal').describe("Where this host's accounts and passwords live: Parley's database or the LDAP directory (`ldap`)"),
    ldap: ldapSchema.optional().describe('The LDAP directory, for `accounts: ldap`'),
    login: z
      .enum(['sso-or-password', 'sso', 'password'])
      .default('sso-or-password')
      .describe('How people log in (issue 9): `sso` only with tokens from single sign-on (SASL OAUTHBEARER; passwords not offered), `password` only with passwords (OAUTHBEARER not offered), or either'),
    cert: z.string().optional().describe('PEM certificate for this host (default: the global one)'),
    key: z.string().optional().describe('PEM private key for this host'),
    registration: z
      .object({
        enabled: z.boolean().default(false).describe('Allow XEP-0077 in-band registration on this host'),
        minPasswordLength: z.number().int().min(1).default(8),
      })
      .prefault({})
      .describe('In-band registration (off by default)'),
  })
  .strict();

export const limitsSchema = z
  .object({
    maxStanzaBytes: z.number().int().min(1024).default(262144).describe('Largest stanza a client may send (bytes)'),
    maxDepth: z.number().int().min(4).max(256).default(32).describe('Deepest element nesting in a stanza'),
    maxAttributes: z.number().int().min(8).default(64).describe('Most attributes on one element'),
    connectionsPerAddress: z
      .number()
      .int()
      .min(1)
      .default(1000)
      .describe('Open client connections per IP address, logged-in ones included (an office behind NAT is one address)'),
    preAuthPerAddress: z
      .number()
      .int()
      .min(1)
      .default(20)
      .describe('Unauthenticated connections per IP address; when full, its least advanced (then oldest) one is closed to admit a newcomer'),
    trustedNetworks: z
      .array(z.string().refine(isAddressOrCidr, 'expected an IP address or a CIDR range'))
      .default([])
      .describe('Networks (CIDR) with their own, larger quotas: the office NAT, a reverse proxy, the tunnel gateway'),
    trustedConnectionsPerAddress: z.number().int().min(1).default(20000).describe('Open client connections per address in a trusted network'),
    trustedPreAuthPerAddress: z.number().int().min(1).default(1000).describe('Unauthenticated connections per address in a trusted network'),
    negotiationTimeoutMs: z.number().int().min(100).default(60000).describe('Deadline for TLS+SASL+bind'),
    resourcesPerAccount: z.number().int().min(1).default(10).describe('Concurrent sessions per account'),
    rosterSize: z.number().int().min(1).default(1000).describe('Most roster items per account'),
    offlineQuota: z.number().int().min(0).default(500).describe('Most stored offline messages per account'),
    bytesPerSecond: z.number().int().min(1024).default(65536).describe('Sustained inbound bytes/s per session'),
    burstBytes: z.number().int().min(1024).default(524288).describe('Inbound byte burst per session'),
    stanzasPerSecond: z.number().int().min(1).default(200).describe('Sustained inbound stanzas/s per session'),
    burstStanzas: z.number().int().min(1).default(1000).describe('Inbound stanza burst per session'),
    outputBufferBytes: z.number().int().min(16384).default(4194304).describe('Unsent bytes to a client before it is disconnected'),
    idlePingSeconds: z.number().int().min(0).default(300).describe('Ping a client silent this long (0: never)'),
    pingTimeoutSeconds: z.number().int().min(1).default(60).describe('Close a client that does not answer the idle ping'),
    privateStorageItems: z.number().int().min(1).default(100).describe('Most XEP-0049 namespaces per account'),
    privateItemBytes: z.number().int().min(256).default(65536).describe('Largest private XML / vCard document'),
    blocklistSize: z.number().int().min(1).default(1000).describe('Most blocked JIDs per account'),
  })
  .strict();

export const configSchema = z
  .object({
    hosts: z
      .array(z.preprocess((v) => (typeof v === 'string' ? { domain: v } : v), hostSchema))
      .min(1)
      .prefault(['localhost'])
      .describe('Virtual hosts served by this server'),
    dataDir: z.string().default('./data').describe('Where the database, generated certificate and secrets live'),
    listen: z
      .object({
        address: z.string().default('::').describe('Address to bind client listeners to'),
        c2s: port.nullable().default(5222).describe('Client port with STARTTLS (null: off)'),
        c2sDirectTls: port.nullable().default(5223).describe('Client port with direct TLS, XEP-0368 (null: off)'),
        proxyProtocol: z
          .object({
            trusted: z
              .array(z.string().refine(isAddressOrCidr, 'expected an IP address or a CIDR range'))
              .describe('Load balancers (addresses or CIDR ranges) whose PROXY protocol header is believed; a header from any other address closes the connection'),
            required: z
              .boolean()
              .default(true)
              .describe('A connection from a trusted address must start with a header. false (optional) is for a balancer that also passes connections without one: then anyone whose connection reaches the port from a trusted address without a header (another path through the balancer, a host in the trusted range) can send a header claiming any client address'),
            timeoutMs: z
              .number()
              .int()
              .min(100)
              .max(60000)
              .default(5000)
              .describe('Applies to trusted addresses only: how long their header may take; a connection that must send one (required), or has begun one, and has not completed it by then is closed; with required: false a silent one goes on without a header. Other addresses never wait'),
          })
          .strict()
          .optional()
          .describe('PROXY protocol v2 (and v1) on the client ports, in the server and in the muxes (absent: off): the session sees the address the load balancer forwards'),
      })
      .strict()
      .prefault({}),
    http: z
      .object({
        address: z.string().default('::').describe('Address of the HTTPS listener (BOSH, WebSocket, upload, host-meta, metrics)'),
        tlsPort: port.nullable().default(5281).describe('HTTPS port of the web container (null: off)'),
        plainAddress: z.string().default('127.0.0.1').describe('Address of the plain HTTP listener (loopback by default: for a reverse proxy)'),
        port: port.nullable().default(5280).describe('Plain HTTP port of the web container (null: off)'),
        trustedProxies: z
          .array(z.string())
          .default([])
          .describe('Addresses (or CIDR ranges) of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed'),
        publicUrl: z.string().url().optional().describe('Base URL clients use to reach the web container (host-meta, upload URLs); default: from each request'),
        secureLoopback: z
          .boolean()
          .default(true)
          .describe('Treat plain HTTP from a loopback address (a local reverse proxy terminating TLS) as secure'),
        frameAncestors: z
          .array(z.string().regex(/^https:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/, 'expected an https origin, e.g. https://intranet.example.com'))
          .default([])
          .describe("Origins allowed to embed the web container's pages in a frame (CSP frame-ancestors; empty: none, e.g. the portal that embeds the channel)"),
        idleTimeoutSeconds: z
          .number()
          .int()
          .min(5)
          .max(3600)
          .default(120)
          .describe('An HTTP connection with no bytes either way for this long is closed (uploads and downloads may take as long as they keep moving; at least bosh.maxWait + 5)'),
        hstsSeconds: z
          .number()
          .int()
          .min(0)
          .default(31536000)
          .describe('Strict-Transport-Security max-age on HTTPS answers (0: no HSTS header)'),
        testPages: z
          .boolean()
          .default(false)
          .describe('Serve the browser test pages under /test/ (they take a password in their URL): for the test suite only, never in production'),
        bosh: z
          .object({
            enabled: z.boolean().default(true).describe('Serve BOSH (XEP-0124/XEP-0206) at /http-bind'),
            maxWait: z.number().int().min(1).max(100).default(60).describe('Longest time (s) a request is held open, whatever the client asks'),
            maxHold: z.number().int().min(0).max(4).default(1).describe('Most requests held open at once per session'),
            maxRequests: z.number().int().min(1).max(5).default(2).describe('Most simultaneous requests per session (the rid window)'),
            maxInactivity: z.number().int().min(1).max(600).default(60).describe('Seconds without any request before a session is dropped'),
            maxPause: z.number().int().min(0).max(3600).default(120).describe('Longest pause (s) a client may request (0: none)'),
            polling: z.number().int().min(0).max(60).default(2).describe('Shortest interval (s) between empty polls (0: no limit)'),
            maxBodyBytes: z.number().int().min(1024).default(300000).describe('Largest request body (bytes); larger ones get 413'),
            origins: z.array(z.string()).default([]).describe('Origins allowed to use BOSH from a browser (CORS; empty: any)'),
          })
          .strict()
          .prefault({})
          .describe('BOSH connection manager limits'),
        metrics: z
          .object({
            enabled: z.boolean().default(true).describe('Serve Prometheus metrics at /metrics (/healthz and /readyz are always served)'),
            allow: z
              .array(z.string().refine(isAddressOrCidr, 'expected an IP address or a CIDR range'))
              .default([])
              .describe('Client addresses (or CIDR ranges) allowed to scrape /metrics without a token (none by default, loopback included: a reverse proxy on this machine would make everyone loopback); behind a trusted proxy, the forwarded address'),
            token: z.string().min(16).optional().describe('Bearer token (Authorization: Bearer ...) that grants /metrics from any address'),
            probeSeconds: z.number().int().min(0).default(15).describe('Interval of the storage latency probe (0: only at scrape and /readyz)'),
            storageTimeoutMs: z.number().int().min(50).max(60000).default(2000).describe('Deadline for the storage ping of /readyz, /metrics and the probe'),
          })
          .strict()
          .prefault({})
          .describe('Operations endpoints: /healthz, /readyz, /metrics'),
        websocket: z
          .object({
            enabled: z.boolean().default(true).describe('Serve XMPP over WebSocket (RFC 7395) at /xmpp-websocket'),
            origins: z.array(z.string()).default([]).describe('Origins (scheme://host[:port]) allowed to open WebSocket connections from a browser (empty: any)'),
            pingSeconds: z.number().int().min(0).default(30).describe('WebSocket ping interval; a connection silent since the previous ping is dropped (0: no pings)'),
            seeOtherUri: z
              .string()
              .url()
              .regex(/^wss?:\/\//)
              .optional()
              .describe('Redirect every new WebSocket stream to this ws(s):// URL (RFC 7395 see-other-uri), e.g. while draining a node'),
          })
          .strict()
          .prefault({})
          .describe('XMPP over WebSocket (RFC 7395)'),
      })
      .strict()
      .prefault({}),
    tls: z
      .object({
        cert: z.string().optional().describe('PEM certificate (default: generated self-signed in dataDir)'),
        key: z.string().optional().describe('PEM private key'),
        required: z.boolean().default(true).describe('Require STARTTLS before authentication'),
      })
      .strict()
      .prefault({}),
    storage: z
      .discriminatedUnion('type', [
        z.object({ type: z.literal('sqlite'), path: z.string().optional() }).strict(),
        z
          .object({
            type: z.literal('postgres'),
            url: z.string().optional(),
            host: z.string().optional(),
            port: port.optional(),
            user: z.string().optional(),
            password: z.string().optional(),
            database: z.string().optional(),
            max: z.number().int().min(1).optional(),
          })
          .strict(),
      ])
      .default({ type: 'sqlite' })
      .describe('sqlite (default: dataDir/parley.sqlite) or postgres'),
    auth: z
      .object({
        allowPlainWithoutTls: z.boolean().default(false).describe('Offer PLAIN on unencrypted streams (never do this in production)'),
        scramIterations: z.number().int().min(4096).default(4096).describe('PBKDF2 iterations for new SCRAM secrets'),
        maxFailuresPerAddress: z
          .number()
          .int()
          .min(1)
          .default(100)
          .describe('Wrong credentials from one address (any accounts) within banSeconds that ban the address for banSeconds'),
        trustedMaxFailuresPerAddress: z
          .number()
          .int()
          .min(1)
          .default(1000)
          .describe('The same for an address in limits.trustedNetworks'),
        maxFailuresPerPair: z
          .number()
          .int()
          .min(1)
          .default(10)
          .describe('Wrong credentials for one account from one address within banSeconds that ban that pair (not the account) for banSeconds'),
        banSeconds: z.number().int().min(1).default(900).describe('Counting window and ban length of the login throttle'),
        recheckSeconds: z
          .number()
          .min(0.5)
          .max(3600)
          .default(30)
          .describe('How often the server asks the database whether the accounts and tokens its sessions logged in with are still there (removed or revoked by `parley user remove`, `parley token revoke`, another node): those sessions end'),
        tokens: z
          .object({
            lifetimeSeconds: z.number().int().min(1).max(86400).default(300).describe('Lifetime of an XMPP token (SASL OAUTHBEARER) when its issuer does not ask for one'),
            maxLifetimeSeconds: z.number().int().min(1).max(86400).default(86400).describe('Longest lifetime an issuer may give an XMPP token (at most one day)'),
          })
          .strict()
          .refine((t) => t.lifetimeSeconds <= t.maxLifetimeSeconds, { message: 'lifetimeSeconds must not exceed maxLifetimeSeconds', path: ['lifetimeSeconds'] })
          .prefault({})
          .describe('XMPP tokens: short-lived, revocable bearer tokens for SASL OAUTHBEARER (`parley token`)'),
      })
      .strict()
      .prefault({}),
    sso: ssoSchema,
    mux: z
      .object({
        count: z.number().int().min(0).max(64).default(1).describe('Multiplexor processes `parley start` runs (0: clients connect to the server process directly)'),
        linkAddress: z.string().default('127.0.0.1').describe('Address of the server side of the mux link, or unix:/path for a Unix domain socket'),
        linkPort: port.default(0).describe('Port of the mux link listener (0: ephemeral; set one for standalone muxes)'),
        linkTls: z
          .enum(['auto', 'on', 'off'])
          .default('auto')
          .describe('TLS on the mux link listener (server certificate of `tls`): auto = on unless linkAddress is loopback; off off loopback needs `insecure: true`'),
        linkClientCa: z.string().optional().describe('PEM file (or text) of the CA whose client certificates muxes must present on a TLS link (for `auth: certificate`)'),
        auth: z
          .enum(['secret', 'certificate', 'secret+certificate'])
          .default('secret')
          .describe('How a mux link is authenticated: the shared secret (HMAC challenge), a client certificate (TLS link, linkClientCa / server.cert), or both'),
        reportedAddresses: z
          .enum(['auto', 'trusted', 'scoped'])
          .default('auto')
          .describe("Client addresses a mux reports: trusted (quotas and login bans shared with every path), scoped (they count only for that mux's connections, so a mux cannot get an address banned elsewhere), auto: trusted for a mux on this machine, scoped for one on another host"),
        insecure: z
          .boolean()
          .default(false)
          .describe('Allow a plaintext mux link to or from a non-loopback address (every client\'s decrypted traffic, passwords included, crosses the network in the clear)'),
        server: z
          .object({
            host: z.string().default('127.0.0.1').describe('Address or name of the server, or unix:/path (its Unix socket link)'),
            port: port.default(5270),
            tls: z.enum(['auto', 'on', 'off']).default('auto').describe('TLS on the link to the server: auto = on unless host is loopback'),
            ca: z.string().optional().describe("PEM file (or text) of the CA (or the certificate) that verifies the server (default: dataDir/tls/ca.pem, the server's generated CA)"),
            fingerprint: z
              .string()
              .regex(/^(?:[0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$/, 'expected a SHA-256 fingerprint (64 hex digits, colons allowed)')
              .optional()
              .describe("SHA-256 fingerprint of the server's certificate (a pin: with it, no CA is needed)"),
            servername: z.string().optional().describe('Name the server certificate must carry (default: host when it is a name, else the first host)'),
            cert: z.string().optional().describe('Client certificate (PEM file) the mux presents, for auth: certificate'),
            key: z.string().optional().describe('Private key of the client certificate'),
          })
          .strict()
          .prefault({})
          .describe('Where a standalone `parley mux` connects, and how it verifies the server'),
        secret: z.string().min(16).optional().describe('Shared link secret (default: generated into dataDir/mux.key)'),
      })
      .strict()
      .prefault({}),
    sessions: z
      .object({
        conflict: z.enum(['kick-old', 'refuse']).default('kick-old').describe('What happens when a resource is bound twice'),
      })
      .strict()
      .prefault({}),
    acl: z
      .object({
        directory: z.string().default('acl').describe('Directory of the access control files (docs/acl.md); relative paths start at the configuration file\'s directory'),
        watch: z.boolean().default(true).describe('Reload the access control files automatically when one changes (`parley reload` always works)'),
        groups: z
          .record(
            z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'expected a group name: letters, digits, ".", "_" or "-"'),
            z.array(z.string().refine((v) => !!Jid.tryParse(v)?.local && !Jid.tryParse(v)?.resource, 'expected a bare user JID (user@domain)')),
          )
          .default({})
          .describe('Groups the access files name as @group: group name → member JIDs (until directory groups exist)'),
      })
      .strict()
      .prefault({})
      .describe('Access control files: who may create rooms and channels, send alerts, run polls, administer'),
    modules: z
      .record(z.string(), z.union([z.boolean(), z.record(z.string(), z.unknown())]))
      .default({})
      .describe('Per-module options; `name: false` disables a module'),
    log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).strict().prefault({}),
  })
  .strict();

export type ParleyConfig = z.infer<typeof configSchema>;
export type HostConfig = z.infer<typeof hostSchema>;
export type Limits = z.infer<typeof limitsSchema>;
export type ResolvedConfig = ParleyConfig & { limits: Limits };

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function formatIssues(error: z.ZodError, prefix = ''): string[] {
  return error.issues.map((i) => {
    const path = [prefix, ...i.path.map(String)].filter(Boolean).join('.');
    return `${path || '(root)'}: ${i.message}`;
  });
}

/**
 * A module as configuration validation sees it: its name and options schema. The composition root
 * (src/cli) hands the built-in modules in; core never imports a feature.
 */
export interface ConfigurableModule {
  readonly name: string;
  readonly options: z.ZodType;
}

export interface ValidateOptions {
  /**
   * The modules this server has: a `modules:` entry naming another one is an error (a typo would
   * otherwise be ignored silently), and each entry's options are checked against its schema.
   */
  modules?: readonly ConfigurableModule[];
}

/** Problems of the `modules:` section against the known modules, each with its path. */
function moduleProblems(raw: unknown, modules: readonly ConfigurableModule[]): string[] {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return [];
  const problems: string[] = [];
  const known = new Map(modules.map((m) => [m.name, m]));
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    const def = known.get(name);
    if (!def) {
      problems.push(`modules.${name}: unknown module "${name}" (modules: ${[...known.keys()].join(', ')})`);
      continue;
    }
    if (typeof value === 'boolean' || value === null || typeof value !== 'object' || Array.isArray(value)) continue; // the main schema reports these
    const r = def.options.safeParse(value);
    if (!r.success) problems.push(...formatIssues(r.error, `modules.${name}`));
  }
  return problems;
}

/** Validates a parsed document; throws ConfigError listing every problem with its path. */
export function validateConfig(raw: unknown, baseDir = process.cwd(), opts: ValidateOptions = {}): Readonly<ResolvedConfig> {
  const doc = (raw ?? {}) as Record<string, unknown>;
  const { limits: rawLimits, ...rest } = typeof doc === 'object' && !Array.isArray(doc) ? doc : ({} as Record<string, unknown>);
  const problems: string[] = [];
  const main = configSchema.safeParse(rest);
  if (!main.success) problems.push(...formatIssues(main.error));
  const limits = limitsSchema.safeParse(rawLimits ?? {});
  if (!limits.success) problems.push(...formatIssues(limits.error, 'limits'));
  if (opts.modules) problems.push(...moduleProblems(rest.modules, opts.modules));
  if (!main.success || !limits.success || problems.length) throw new ConfigError(problems);
  const cfg: ResolvedConfig = { ...main.data, limits: limits.data };
  const domains = new Set<string>();
  for (const h of cfg.hosts) {
    const d = h.domain.toLowerCase();
    if (domains.has(d)) problems.push(`hosts: duplicate host ${d}`);
    domains.add(d);
    h.domain = d;
  }
  if (!!cfg.tls.cert !== !!cfg.tls.key) problems.push('tls: cert and key must be given together');
  for (const [i, h] of cfg.hosts.entries()) {
    if (h.accounts === 'ldap' && !h.ldap) problems.push(`hosts.${i}.ldap: required when accounts is ldap`);
  }
  const ssoNames = new Set<string>();
  for (const [i, p] of cfg.sso.providers.entries()) {
    p.host = p.host.toLowerCase();
    const h = cfg.hosts.find((x) => x.domain === p.host);
    if (ssoNames.has(p.name)) problems.push(`sso.providers.${i}.name: duplicate provider ${p.name}`);
    ssoNames.add(p.name);
    if (!h) problems.push(`sso.providers.${i}.host: ${p.host} is not one of the hosts`);
    else if (h.login === 'password') problems.push(`sso.providers.${i}.host: ${p.host} has login: password (no single sign-on)`);
    else if (p.jit && h.accounts === 'ldap') problems.push(`sso.providers.${i}.jit: ${p.host} keeps its accounts in LDAP; accounts cannot be created at sign-in`);
  }
  const audiences = new Map<string, string>();
  for (const [i, p] of cfg.sso.providers.entries()) {
    if (p.type !== 'oidc' || !p.bearer) continue;
    const key = `${p.issuer} ${p.bearer.audience}`;
    const other = audiences.get(key);
    if (other && other !== p.host) problems.push(`sso.providers.${i}.bearer.audience: ${p.bearer.audience} is already the audience of ${other}'s tokens from this issuer (one token would log in on both hosts)`);
    audiences.set(key, p.host);
  }
  for (const [i, h] of cfg.hosts.entries()) {
    if (h.registration.enabled && cfg.sso.providers.some((p) => p.host === h.domain)) {
      problems.push(`hosts.${i}.registration: in-band registration is off on hosts with identity providers (anyone could register a colleague's name before their first sign-in)`);
    }
  }
  if (cfg.sso.providers.length && !cfg.sso.baseUrl && !cfg.http.publicUrl?.startsWith('https://')) {
    problems.push('sso.baseUrl: required (an https:// URL) when identity providers are configured and http.publicUrl is not an https:// URL');
  }
  for (const [i, h] of cfg.hosts.entries()) {
    if (h.login === 'sso' && h.registration.enabled) problems.push(`hosts.${i}.registration: in-band registration needs passwords, but login is sso`);
  }
  problems.push(...muxLinkProblems(cfg.mux));
  if (problems.length) throw new ConfigError(problems);
  cfg.dataDir = resolve(baseDir, cfg.dataDir);
  if (cfg.tls.cert) cfg.tls.cert = resolve(baseDir, cfg.tls.cert);
  if (cfg.tls.key) cfg.tls.key = resolve(baseDir, cfg.tls.key);
  for (const h of cfg.hosts) {
    if (h.cert) h.cert = resolve(baseDir, h.cert);
    if (h.key) h.key = resolve(baseDir, h.key);
    if (h.ldap?.tls.ca && !h.ldap.tls.ca.includes('-----BEGIN')) h.ldap.tls.ca = resolve(baseDir, h.ldap.tls.ca);
  }
  const pemOrPath = (v: string) => (v.includes('-----BEGIN') ? v : resolve(baseDir, v));
  for (const p of cfg.sso.providers) {
    if (p.type !== 'saml') continue;
    p.idpCerts = p.idpCerts.map(pemOrPath);
    if (p.spKey) p.spKey = pemOrPath(p.spKey);
    if (p.spCert) p.spCert = pemOrPath(p.spCert);
  }
  if (cfg.mux.linkClientCa) cfg.mux.linkClientCa = pemOrPath(cfg.mux.linkClientCa);
  if (cfg.mux.server.ca) cfg.mux.server.ca = pemOrPath(cfg.mux.server.ca);
  if (cfg.mux.server.cert) cfg.mux.server.cert = resolve(baseDir, cfg.mux.server.cert);
  if (cfg.mux.server.key) cfg.mux.server.key = resolve(baseDir, cfg.mux.server.key);
  if (cfg.storage.type === 'sqlite') cfg.storage.path = resolve(cfg.dataDir, cfg.storage.path ?? 'parley.sqlite');
  cfg.acl.directory = resolve(baseDir, cfg.acl.directory);
  return deepFreeze(cfg);
}

/** Whether a mux link to or on this address is encrypted, from its `auto | on | off` setting. */
export function muxLinkEncrypted(mode: 'auto' | 'on' | 'off', address: string): boolean {
  return mode === 'on' || (mode === 'auto' && !isLocalLink(address));
}

/**
 * The mux link carries every client's decrypted bytes (SASL PLAIN passwords, tokens, messages):
 * plaintext is allowed on loopback only, unless `mux.insecure` says otherwise (issue 15 §5).
 */
function muxLinkProblems(mux: ParleyConfig['mux']): string[] {
  const problems: string[] = [];
  const danger = "carries every client's decrypted traffic (passwords included) in the clear";
  if (!mux.insecure && !muxLinkEncrypted(mux.linkTls, mux.linkAddress) && !isLocalLink(mux.linkAddress)) {
    problems.push(`mux.linkTls: a plaintext mux link listener on ${mux.linkAddress}, which is not a loopback address, ${danger}; use linkTls: on (or auto), or set mux.insecure: true to accept that`);
  }
  if (!mux.insecure && !muxLinkEncrypted(mux.server.tls, mux.server.host) && !isLocalLink(mux.server.host)) {
    problems.push(`mux.server.tls: a plaintext link to ${mux.server.host}, which is not a loopback address, ${danger}; use tls: on (or auto), or set mux.insecure: true to accept that`);
  }
  if (!!mux.server.cert !== !!mux.server.key) problems.push('mux.server: cert and key must be given together');
  // A certificate mode on a mux (a configuration without linkClientCa cannot be a server's, and one
  // with mux.server.cert is a mux's): the link must be TLS, with a client certificate. Otherwise
  // the mux could not authenticate, and nothing would authenticate the server but a secret that
  // certificate mode need not share.
  if (mux.auth !== 'secret' && (!mux.linkClientCa || mux.server.cert || mux.server.key)) {
    if (!muxLinkEncrypted(mux.server.tls, mux.server.host)) {
      problems.push(`mux.auth: ${mux.auth} on a mux needs a TLS link to the server (mux.server.tls: on), which verifies the server's certificate; ${mux.server.host} is reached in plaintext (on the server, certificate authentication needs mux.linkClientCa)`);
    }
    if (!mux.server.cert || !mux.server.key) {
      problems.push(`mux.auth: ${mux.auth} on a mux needs mux.server.cert and mux.server.key, the client certificate it presents (on the server, certificate authentication needs mux.linkClientCa)`);
    }
  }
  return problems;
}

/** Loads parley.yaml (or the given path). A missing default file means embedded defaults. */
export function loadConfig(path?: string, opts: ValidateOptions = {}): Readonly<ResolvedConfig> {
  const file = path ?? 'parley.yaml';
  if (!existsSync(file)) {
    if (path) throw new ConfigError([`${path}: file not found`]);
    return validateConfig({}, process.cwd(), opts);
  }
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'), { prettyErrors: true });
  } catch (err) {
    throw new ConfigError([`${file}: ${(err as Error).message}`]);
  }
  return validateConfig(doc, dirname(resolve(file)), opts);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
