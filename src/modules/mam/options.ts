// Options of the XEP-0313 archive module (parley.yaml `modules.mam`).
import { z } from 'zod';

export const mamOptions = z
  .object({
    defaultPrefs: z
      .enum(['always', 'roster', 'never'])
      .default('always')
      .describe('Archiving default for users who never set <prefs/> (XEP-0313 §5)'),
    retentionDays: z.number().min(0).default(0).describe('Delete archived messages older than this many days; 0 keeps them forever'),
    purgeIntervalSeconds: z.number().min(0.05).default(3600).describe('How often expired messages are purged (when retentionDays > 0)'),
    maxPerUser: z.number().int().min(0).default(100_000).describe('Per-user cap: beyond it the oldest messages are deleted; 0 = no cap'),
    defaultPageSize: z.number().int().min(1).default(50).describe('Page size when a query has no RSM <max/>'),
    maxPageSize: z.number().int().min(1).default(250).describe('Largest page a query gets, whatever its <max/> says'),
    maxPrefsJids: z.number().int().min(0).default(1000).describe('Most JIDs in the always and never lists together'),
  })
  .strict();

export type MamOptions = z.infer<typeof mamOptions>;
