// Built-in modules, in load order.
import type { ModuleDefinition } from '../core/module.js';
import disco from './disco.js';
import ping from './ping.js';
import version from './version.js';
import time from './time.js';
import roster from './roster/index.js';
import offline from './offline.js';
import vcard from './vcard.js';
import privateStorage from './private.js';
import blocking from './blocking.js';
import register from './register.js';
import last from './last.js';
import carbons from './carbons.js';
import csi from './csi.js';
import sm from './sm.js';
import extdisco from './extdisco.js';
import push from './push.js';

export const builtinModules: ModuleDefinition[] = [disco, ping, version, time, roster, offline, vcard, privateStorage, blocking, register, last, carbons, csi, sm, extdisco, push] as ModuleDefinition[];
