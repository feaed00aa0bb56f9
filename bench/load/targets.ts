// The targets bench/run.ts compares, by name, from bench/targets/ (started comparably there).
import { ejabberd } from '../targets/ejabberd.js';
import { parley, parleyNoMux } from '../targets/parley.js';
import { prosody } from '../targets/prosody.js';
import type { TargetFactory } from '../targets/types.js';

export const TARGET_NAMES = ['parley', 'parley-nomux', 'prosody', 'ejabberd'] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

export const FACTORIES: Record<TargetName, TargetFactory> = {
  parley,
  'parley-nomux': parleyNoMux,
  prosody,
  ejabberd,
};
