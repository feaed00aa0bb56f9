// The web container (issue 6): one express application in the server process, served on a plain
// HTTP port (loopback by default, for a reverse proxy) and an HTTPS port (with the server's
// certificates, SNI per host). Browser transports (BOSH at /http-bind, WebSocket at
// /xmpp-websocket) mount themselves here; modules add routes through ctx.httpRoute() (the registry
// in src/core/http.ts, dispatched at request time); static resources are served from one directory
// (web/public) so that the messenger and the portal only add files.
//
// Client addresses: the socket's, or the X-Forwarded-For chain walked back through configured
// trusted proxies with proxy-addr (the first hop not in http.trustedProxies is the client; several
// trusted proxies in a row are followed), the same rule as express' req.ip. A request is secure when it came over HTTPS, over HTTP
// from a trusted proxy that says X-Forwarded-Proto: https, or over HTTP from loopback when
// `http.secureLoopback` is on (a local proxy terminating TLS).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { SecureContext } from 'node:tls';
import { resolve } from 'node:path';
import express, { type Express, type Request, type RequestHandler, type Router } from 'express';
import proxyaddr from 'proxy-addr';
import { isLoopback } from '../core/addresses.js';
import type { Server } from '../core/server.js';
import type { TlsMaterial } from '../core/tls.js';
import { TLS_BASE_OPTIONS } from '../core/tls.js';

/** Where static resources live (the messenger, the portal widget, test pages). */
export const STATIC_DIR = resolve(import.meta.dirname, '../../web/public');

export type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer, info: RequestInfo) => void;

export interface RequestInfo {
  /** The client's address (X-Forwarded-For from a trusted proxy, else the socket's). */
  remoteAddress: string;
  /** TLS protects the request end to end as far as we can tell (see the header). */
  secure: boolean;
}

export interface WebContainer {
  app: Express;
  /** Bound ports (null: that listener is off). */
  ports: { http: number | null; https: number | null };
  /** Mounts a transport's router before the module routes and static files. */
  mount(path: string, router: RequestHandler | Router): void;
  /** Takes WebSocket upgrades for one path. */
  onUpgrade(path: string, handler: UpgradeHandler): void;
  /** Address and security of a request, as the header explains. */
  requestInfo(req: http.IncomingMessage): RequestInfo;
  close(): Promise<void>;
}


/** Headers a proxy adds to say who the client is or how it came. */
const FORWARDING_HEADERS = [
  'forwarded',
  'via',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-ssl',
  'x-forwarded-scheme',
  'x-real-ip',
  'true-client-ip',
  'cf-connecting-ip',
];
function forwarded(req: http.IncomingMessage): boolean {
  return FORWARDING_HEADERS.some((h) => req.headers[h] !== undefined);
}

export async function startWebContainer(server: Server, tls: TlsMaterial): Promise<WebContainer> {
  const cfg = server.config.http;
  const app = express();
  app.disable('x-powered-by');
  // Issue 16 §7: a Content-Security-Policy on everything (pages load only their own scripts,
  // styles and connections; nothing received is ever script), framing only by configured origins
  // (clickjacking), and HSTS on HTTPS. A route may set a stricter policy (uploads do).
  const frameAncestors = cfg.frameAncestors.length ? cfg.frameAncestors.join(' ') : "'none'";
  const csp = `default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors ${frameAncestors}`;
  app.use((req, res, next) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Security-Policy', csp);
    if (!cfg.frameAncestors.length) res.setHeader('X-Frame-Options', 'DENY');
    res.setHeader('Referrer-Policy', 'no-referrer');
    if (cfg.hstsSeconds > 0 && (req.socket as { encrypted?: boolean }).encrypted === true) {
      res.setHeader('Strict-Transport-Security', `max-age=${cfg.hstsSeconds}`);
    }
    next();
  });

  // One compiled trust function, for express (req.ip) and for requestInfo (upgrades too).
  const trust = cfg.trustedProxies.length ? proxyaddr.compile(cfg.trustedProxies) : null;
  app.set('trust proxy', trust ?? false);
  // Issue 16 §3: a reverse proxy on this machine that is not in http.trustedProxies would make
  // every web user look like 127.0.0.1 (one address's quotas and bans, /metrics, "secure" ws://).
  // Its requests (loopback peer + forwarding headers) are refused with a text saying what to
  // configure. From other addresses forwarding headers are only ignored: an office's outbound
  // proxy may add them to its users' requests.
  let lastProxyWarning = 0;
  const untrustedLocalProxy = (req: http.IncomingMessage): boolean => {
    const peer = req.socket.remoteAddress ?? '';
    if (!isLoopback(peer) || !forwarded(req) || (trust && trust(peer, 0))) return false;
    if (Date.now() - lastProxyWarning > 60_000) {
      lastProxyWarning = Date.now();
      server.log.warn({ peer }, `refusing requests with forwarding headers from ${peer}: add it to http.trustedProxies if it is your reverse proxy`);
    }
    return true;
  };
  const PROXY_REFUSAL = 'forwarding headers from a proxy on this machine that is not in http.trustedProxies: the administrator must add it there\n';
  app.use((req, res, next) => {
    if (untrustedLocalProxy(req)) res.status(403).type('text/plain').send(PROXY_REFUSAL);
    else next();
  });

  // Transports first (mount() adds to this router), then module routes, then static files.
  const transports = express.Router();
  app.use(transports);
  app.use(moduleRoutes(server));
  // The test pages (web/public/test/) take passwords in their URL: only the test suite turns them on.
  if (!cfg.testPages) app.use('/test', (_req, res) => void res.status(404).type('text/plain').send('not found\n'));
  app.use(express.static(STATIC_DIR, { index: ['index.html'], fallthrough: true, dotfiles: 'deny' }));
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found\n');
  });
  // Errors in handlers: client errors (a malformed URL, a body parser's 400/413) keep their status;
  // anything else is a plain 500 with the details only in the log.
  app.use(((err: { status?: number; statusCode?: number }, _req, res, _next) => {
    const status = err.status ?? err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      if (!res.headersSent) res.status(status).type('text/plain').send('bad request\n');
      else res.destroy();
      return;
    }
    server.log.error({ err }, 'http handler failed');
    if (!res.headersSent) res.status(500).type('text/plain').send('internal server error\n');
    else res.destroy();
  }) as express.ErrorRequestHandler);

  const upgrades = new Map<string, UpgradeHandler>();
  const requestInfo = (req: http.IncomingMessage): RequestInfo => {
    const socketAddr = req.socket.remoteAddress ?? 'unknown';
    const viaTls = 'encrypted' in req.socket && (req.socket as { encrypted?: boolean }).encrypted === true;
    let remoteAddress = socketAddr;
    let forwardedTls = false;
    if (trust && trust(socketAddr, 0)) {
      remoteAddress = proxyaddr(req, trust);
      forwardedTls = String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim() === 'https';
    }
    // secureLoopback stands for "a TLS-terminating proxy on this machine that adds no headers";
    // a request with forwarding headers is a proxy's, and only a trusted one may say it was TLS.
    const secure = viaTls || forwardedTls || (cfg.secureLoopback && isLoopback(socketAddr) && isLoopback(remoteAddress) && !forwarded(req));
    return { remoteAddress: normalize(remoteAddress), secure };
  };

  const servers: (http.Server | https.Server)[] = [];
  const ports: WebContainer['ports'] = { http: null, https: null };
  const onUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    if (untrustedLocalProxy(req)) {
      socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(PROXY_REFUSAL)}\r\nConnection: close\r\n\r\n${PROXY_REFUSAL}`);
      return;
    }
    const path = (req.url ?? '').split('?')[0] ?? '';
    const h = upgrades.get(path);
    if (!h) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    h(req, socket, head, requestInfo(req));
  };
  const listen = (srv: http.Server | https.Server, port: number, address: string) =>
    new Promise<number>((resolveListen, reject) => {
      srv.once('error', reject);
      srv.listen(port, address, () => {
        srv.off('error', reject);
        resolveListen((srv.address() as AddressInfo).port);
      });
    });
  const prepare = (srv: http.Server | https.Server) => {
    // Slow-loris and idle limits. No limit on a request's total time (issue 16 §8: a 100 MiB upload
    // over a slow line is legitimate): a connection is closed after idleTimeoutSeconds without a
    // byte either way, which also bounds a stalled upload or download. BOSH holds a request for at
    // most bosh.maxWait, so the idle limit is kept above it.
    srv.headersTimeout = 20_000;
    srv.requestTimeout = 0;
    srv.timeout = Math.max(cfg.idleTimeoutSeconds, cfg.bosh.maxWait + 5) * 1000;
    srv.keepAliveTimeout = 70_000;
    srv.maxHeadersCount = 100;
    srv.on('upgrade', onUpgrade);
    srv.on('clientError', (_err, socket) => socket.destroy());
    servers.push(srv);
  };
  try {
    if (cfg.port !== null) {
      const srv = http.createServer(app);
      prepare(srv);
      ports.http = await listen(srv, cfg.port, cfg.plainAddress);
    }
    if (cfg.tlsPort !== null) {
      // Without SNI (a client connecting by IP address) the default certificate answers.
      const opts = { ...TLS_BASE_OPTIONS, cert: readFileSync(tls.certPath), key: readFileSync(tls.keyPath), SNICallback: (name: string, cb: (e: Error | null, c: SecureContext) => void) => cb(null, tls.contextFor(name)) };
      const srv = https.createServer(opts, app);
      prepare(srv);
      ports.https = await listen(srv, cfg.tlsPort, cfg.address);
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }

  return {
    app,
    ports,
    mount: (path, router) => {
      transports.use(path, router);
    },
    onUpgrade: (path, handler) => {
      upgrades.set(path, handler);
    },
    requestInfo,
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((r) => {
              s.close(() => r());
              s.closeAllConnections();
            }),
        ),
      );
    },
  };
}

/** Dispatches to the routes modules registered, rebuilding the router when the registry changes. */
function moduleRoutes(server: Server): RequestHandler {
  let version = -1;
  let router: Router = express.Router();
  return (req: Request, res, next) => {
    if (version !== server.http.version) {
      router = express.Router();
      for (const r of server.http.list()) {
        const m = r.method.toLowerCase() as 'get' | 'head' | 'put' | 'post' | 'delete' | 'options';
        router[m](r.path, r.handler);
      }
      version = server.http.version;
    }
    router(req, res, next);
  };
}

function normalize(addr: string): string {
  return addr.startsWith('::ffff:') ? addr.slice(7) : addr;
}
