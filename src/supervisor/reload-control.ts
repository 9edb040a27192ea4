import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../shared/errors.ts';
import { processAlive } from '../shared/process-alive.ts';
import type { Settings } from '../shared/settings/index.ts';

/**
 * How `loreley reload` (another shell) finds a running supervisor and learns how its reload went:
 * the supervisor writes its pid to `<LORELEY_DATA_DIR>/supervisor-<namespace>.pid` while it runs,
 * and the outcome of each reload to `reload-<namespace>.json` beside it.
 */

export interface ReloadOutcome {
  readonly pid: number;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly ok: boolean;
  readonly message: string;
  readonly replaced: readonly string[];
}

function pidFile(settings: Settings): string {
  return path.join(settings.dataDir, `supervisor-${settings.experiment.namespace}.pid`);
}

function outcomeFile(settings: Settings): string {
  return path.join(settings.dataDir, `reload-${settings.experiment.namespace}.json`);
}

function writeAtomically(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, text);
  renameSync(temporary, file);
}

/** Writes the pid file; returns a function that removes it (only if it is still ours). */
export function writePidFile(settings: Settings): () => void {
  const file = pidFile(settings);
  writeAtomically(file, `${process.pid}\n`);
  return () => {
    try {
      if (readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file, { force: true });
    } catch {
      // Already gone.
    }
  };
}

export function writeOutcome(settings: Settings, outcome: ReloadOutcome): void {
  writeAtomically(outcomeFile(settings), `${JSON.stringify(outcome)}\n`);
}

export function readOutcome(settings: Settings): ReloadOutcome | undefined {
  try {
    return JSON.parse(readFileSync(outcomeFile(settings), 'utf8')) as ReloadOutcome;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is a Loreley supervisor (Linux: its command line; elsewhere: alive is enough). */
function looksLikeSupervisor(pid: number): boolean {
  if (!processAlive(pid)) return false;
  const cmdline = `/proc/${pid}/cmdline`;
  if (!existsSync('/proc/self/cmdline')) return true;
  try {
    return /loreley|supervisor/.test(readFileSync(cmdline, 'utf8'));
  } catch {
    return false;
  }
}

/** The pid of the supervisor running this experiment from this data directory, or a UserError saying why not. */
export function runningSupervisor(settings: Settings): number {
  const file = pidFile(settings);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`no supervisor is running experiment ${settings.experiment.namespace} from this directory (no ${file}); start it with loreley-supervisor, or run this where it runs`);
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0 || !looksLikeSupervisor(pid)) {
    throw new UserError(`no supervisor is running experiment ${settings.experiment.namespace}: ${file} names pid ${text.trim()}, which is not running (a stale file from a killed supervisor)`);
  }
  return pid;
}
