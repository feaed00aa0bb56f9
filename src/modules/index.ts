// Built-in modules, in load order.
import type { ModuleDefinition } from '../core/module.js';
import disco from './disco.js';
import ping from './ping.js';
import version from './version.js';
import time from './time.js';
import roster from './roster/index.js';
import offline from './offline.js';

export const builtinModules: ModuleDefinition[] = [disco, ping, version, time, roster, offline] as ModuleDefinition[];
