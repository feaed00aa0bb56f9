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
import pep from './pep/index.js';
import bookmarks from './bookmarks.js';
import carbons from './carbons.js';
import csi from './csi.js';
import sm from './sm.js';
import extdisco from './extdisco.js';
import push from './push.js';
import mam from './mam/index.js';
import avatars from './avatars.js';
import upload from './upload.js';
import proxy65 from './proxy65.js';

export const builtinModules: ModuleDefinition[] = [disco, ping, version, time, roster, offline, vcard, privateStorage, blocking, register, last, pep, bookmarks, carbons, csi, sm, extdisco, push, mam, avatars, upload, proxy65] as ModuleDefinition[];
