// Access control files (issue 7): what the composition root and the CLI use. The running server
// loads the directory at start (refusing to start on a malformed file: there are no previous rules
// to keep), watches it, reloads on SIGHUP, and writes each reload's report to dataDir/acl-status.json
// so that `parley reload` can print what was loaded and what was refused.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../../core/config.js';
import { FileAccessControl, type AclReloadReport, type FileAccessControlOptions } from './file-acl.js';

export { FileAccessControl, AclLoadError, SERVICE_FILES, SERVICES_DIR, SUN_SERVICE_FILES } from './file-acl.js';
export type { AclReloadReport, AclFileReport, FileAccessControlOptions } from './file-acl.js';
export { parseAclFile, parseSubject, AclSyntaxError } from './parse.js';
export type { Subject, Grant, AclEntry, ParsedAclFile } from './parse.js';

/** The file (in dataDir) where the running server reports each reload. */
export const ACL_STATUS_FILE = 'acl-status.json';

export interface AclStatus extends AclReloadReport {
  pid: number;
}

export interface AccessFilesOptions {
  config: Readonly<ResolvedConfig>;
  isLocal: (domain: string) => boolean;
  log?: Logger;
  /** Where to write each reload's report (the `parley start` process only). */
  statusPath?: string;
  /** Groups from elsewhere (issue 8: directory groups of LDAP hosts). */
  groupResolver?: FileAccessControlOptions['groupResolver'];
}

/** Loads the access files of the configuration; throws AclLoadError when one is malformed. */
export async function startAccessFiles(opts: AccessFilesOptions): Promise<FileAccessControl> {
  const { config } = opts;
  const acl = new FileAccessControl({
    directory: config.acl.directory,
    groups: config.acl.groups,
    isLocal: opts.isLocal,
    log: opts.log?.child({ component: 'acl' }),
    groupResolver: opts.groupResolver,
  });
  if (opts.statusPath) {
    const path = opts.statusPath;
    acl.onReload((report) => writeAclStatus(path, report, opts.log));
  }
  await acl.start();
  if (config.acl.watch) acl.watch();
  return acl;
}

function writeAclStatus(path: string, report: AclReloadReport, log?: Logger): void {
  const st: AclStatus = { pid: process.pid, ...report };
  try {
    writeFileSync(`${path}.tmp`, JSON.stringify(st, null, 2));
    renameSync(`${path}.tmp`, path);
  } catch (err) {
    log?.warn({ err }, 'cannot write the access control status file');
  }
}

/** Reads the report the running server wrote (null when there is none or it is unreadable). */
export function readAclStatus(path: string): AclStatus | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as AclStatus;
  } catch {
    return null;
  }
}

/** Human-readable lines of a report: one per file with its rule count, then errors and warnings. */
export function formatAclReport(report: AclReloadReport): string {
  const lines = [`access control files in ${report.directory} (reload ${report.generation}, ${report.reason}):`];
  if (!report.files.length) lines.push('  no access control files: built-in defaults apply');
  for (const f of report.files) {
    const n = `${f.rules} rule${f.rules === 1 ? '' : 's'}`;
    if (f.status === 'loaded') lines.push(`  ${f.file}: ${n}`);
    else if (f.status === 'kept') lines.push(`  ${f.file}: ERROR, previous rules kept (${n})`);
    else if (f.status === 'rejected') lines.push(`  ${f.file}: ERROR, not in force (defaults apply)`);
    else lines.push(`  ${f.file}: removed`);
  }
  for (const e of report.errors) lines.push(`error: ${e}`);
  for (const w of report.warnings) lines.push(`warning: ${w}`);
  return `${lines.join('\n')}\n`;
}
