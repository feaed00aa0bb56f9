// HTTP routes that modules add to the web container (XEP-0363 upload, later the admin API and SSO
// endpoints). The container (src/transports/web.ts) dispatches to this registry at request time, so
// modules need not know whether, or on which ports, it runs.
import type { RequestHandler } from 'express';

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE' | 'OPTIONS';

export interface HttpRoute {
  method: HttpMethod;
  /** An express path, e.g. '/upload/:slot/:name'. */
  path: string;
  handler: RequestHandler;
  owner: string;
}

export class HttpRoutes {
  private readonly routes: HttpRoute[] = [];
  /** Bumped on every change; the container rebuilds its router when it sees a new value. */
  version = 0;

  add(route: HttpRoute): () => void {
    this.routes.push(route);
    this.version++;
    return () => {
      const i = this.routes.indexOf(route);
      if (i !== -1) this.routes.splice(i, 1);
      this.version++;
    };
  }

  list(): readonly HttpRoute[] {
    return this.routes;
  }
}
