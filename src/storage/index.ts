// Storage entry point: picks a backend from configuration. Backends are imported lazily so that a
// SQLite deployment never loads pg and a PostgreSQL one never loads the native better-sqlite3 addon.
import type { Storage } from './types.js';

export type * from './types.js';
export { LATEST_SCHEMA_VERSION, SchemaTooNewError } from './migrations.js';

export type StorageConfig =
  | { type: 'sqlite'; path: string }
  | {
      type: 'postgres';
      url?: string;
      host?: string;
      port?: number;
      user?: string;
      password?: string;
      database?: string;
      max?: number;
    };

export async function openStorage(cfg: StorageConfig): Promise<Storage> {
  switch (cfg.type) {
    case 'sqlite': {
      const { openSqlite } = await import('./sqlite.js');
      return openSqlite({ path: cfg.path });
    }
    case 'postgres': {
      const { openPostgres } = await import('./postgres.js');
      const { type: _type, ...opts } = cfg;
      return openPostgres(opts);
    }
    default: {
      const never: never = cfg;
      throw new Error(`unknown storage type: ${(never as { type: unknown }).type}`);
    }
  }
}
