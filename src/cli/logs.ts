import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../shared/errors.ts';
import type { LogLevel, ReadOnlySettings } from '../shared/settings/index.ts';

/**
 * `loreley logs`: every process's JSONL log of an experiment (supervisor, workers, scheduler, on
 * every host that writes to this directory), across rotated files, merged in time order; coloured
 * readable lines (pino-pretty's formatting, as a library) or the raw JSONL; `--follow` keeps going
 * across rotations and processes that start later, like `pm2 logs` or `journalctl -f`.
 *
 * Layout (src/shared/logger.ts, src/shared/log-file.ts): `<LOGS_BASE_DIR>/logs/<namespace>/<role>/<id>/<id>.<N>.jsonl`,
 * N counting up as files rotate.
 */

export const LOG_ROLES = ['supervisor', 'worker', 'scheduler'] as const;

export interface LogsOptions {
  /** Process ids (`worker0001`, `scheduler0001`, `supervisor`); empty means every process. */
  readonly ids: readonly string[];
  readonly follow: boolean;
  /** The lowest level shown. */
  readonly level: LogLevel | undefined;
  /** A job id or its first characters (as `loreley status` shows them). */
  readonly job: string | undefined;
  /** Only lines at or after this time. */
  readonly since: Date | undefined;
  readonly role: string | undefined;
  readonly json: boolean;
  /** Only the last N matching lines of what is already written (default: all; 10 with --follow). */
  readonly lines: number | undefined;
  readonly colour: boolean;
  /** How often --follow looks for new lines and files. */
  readonly pollMs?: number;
  readonly write?: (text: string) => void;
  readonly signal?: AbortSignal;
}

interface Source {
  readonly role: string;
  readonly id: string;
  readonly directory: string;
}

interface Entry {
  readonly time: string;
  readonly text: string;
  readonly record: Record<string, unknown>;
}

const LEVEL_VALUES: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

export function logsRoot(settings: Pick<ReadOnlySettings, 'logs' | 'experiment'>): string {
  return path.join(settings.logs.baseDir, 'logs', settings.experiment.namespace);
}

/**
 * `--since`: a duration back from now (`90s`, `10m`, `2h`, `1d`) or a date/time (`2026-11-23`,
 * `2026-11-23T19:30:00Z`).
 */
export function parseSince(value: string, now = Date.now()): Date {
  const relative = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/i.exec(value.trim());
  if (relative) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2].toLowerCase() as 's' | 'm' | 'h' | 'd'];
    return new Date(now - Number(relative[1]) * unit);
  }
  const parsed = Date.parse(value);
  if (Number.isNaN(parsed)) throw new UserError(`--since ${JSON.stringify(value)}: expected a duration such as 10m, 2h, 1d or a date such as 2026-11-23T19:30:00Z`);
  return new Date(parsed);
}

function subdirectories(directory: string): string[] {
  try {
    return readdirSync(directory, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();
  } catch {
    return [];
  }
}

function listSources(root: string): Source[] {
  return subdirectories(root).flatMap((role) => subdirectories(path.join(root, role)).map((id) => ({ role, id, directory: path.join(root, role, id) })));
}

/** A process's files, oldest first: by rotation number (`<id>.<N>.jsonl`), then name. */
function logFiles(directory: string): string[] {
  let names: string[];
  try {
    names = readdirSync(directory).filter((name) => name.endsWith('.jsonl'));
  } catch {
    return [];
  }
  const number = (name: string) => Number(/\.(\d+)\.jsonl$/.exec(name)?.[1] ?? 0);
  return names.sort((a, b) => number(a) - number(b) || a.localeCompare(b)).map((name) => path.join(directory, name));
}

function parse(text: string): Entry | undefined {
  if (text.trim() === '') return undefined;
  try {
    const record = JSON.parse(text) as Record<string, unknown>;
    if (typeof record !== 'object' || record === null) return undefined;
    return { time: typeof record.time === 'string' ? record.time : '', text, record };
  } catch {
    return undefined; // A torn last line being written right now: read again on the next pass.
  }
}

function matcher(options: LogsOptions): (entry: Entry) => boolean {
  const minimum = options.level ? LEVEL_VALUES[options.level] : 0;
  const since = options.since?.toISOString();
  return ({ record, time }) => {
    if (minimum > 0 && (LEVEL_VALUES[String(record.level)] ?? Number(record.level) ?? 0) < minimum) return false;
    if (options.job && !(typeof record.jobId === 'string' && record.jobId.startsWith(options.job))) return false;
    if (since && time < since) return false;
    return true;
  };
}

/** Stable sort by time: lines of one process keep their order when they share a millisecond. */
function byTime(entries: Entry[]): Entry[] {
  return entries.map((entry, index) => ({ entry, index })).sort((a, b) => (a.entry.time < b.entry.time ? -1 : a.entry.time > b.entry.time ? 1 : a.index - b.index)).map(({ entry }) => entry);
}

async function formatter(options: LogsOptions): Promise<(entry: Entry) => string> {
  if (options.json) return (entry) => `${entry.text}\n`;
  // Loaded here, not with the module: every other command of the CLI would pay for it.
  const { default: pinoPretty } = await import('pino-pretty');
  const pretty = pinoPretty.prettyFactory({
    colorize: options.colour,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,host,hostname,role,workerId',
    messageFormat: '{if workerId}[{workerId}] {end}{msg}',
    singleLine: true,
  });
  return (entry) => pretty(entry.record);
}

/**
 * Reads one file from `offset` to its end; returns the complete lines and the offset after the
 * last one (a partial last line is left for the next read).
 */
function readFrom(file: string, offset: number): { lines: string[]; offset: number } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { lines: [], offset }; // Removed (retention) since it was listed.
  }
  try {
    const size = statSync(file).size;
    if (size <= offset) return { lines: [], offset: Math.min(offset, size) };
    const buffer = Buffer.alloc(size - offset);
    const read = readSync(fd, buffer, 0, buffer.length, offset);
    const text = buffer.subarray(0, read).toString('utf8');
    const end = text.lastIndexOf('\n');
    if (end < 0) return { lines: [], offset };
    return { lines: text.slice(0, end).split('\n'), offset: offset + Buffer.byteLength(text.slice(0, end + 1)) };
  } finally {
    closeSync(fd);
  }
}

export async function runLogs(settings: Pick<ReadOnlySettings, 'logs' | 'experiment'>, options: LogsOptions): Promise<void> {
  const root = logsRoot(settings);
  const write = options.write ?? ((text: string) => void process.stdout.write(text));
  if (!existsSync(root) && !options.follow) {
    throw new UserError(`no logs for experiment ${settings.experiment.raw} under ${root} (is LOGS_BASE_DIR or EXPERIMENT_ID different where it ran?)`);
  }
  const wanted = (source: Source) => (options.ids.length === 0 || options.ids.includes(source.id)) && (!options.role || source.role === options.role);
  const sources = listSources(root).filter(wanted);
  if (sources.length === 0 && !options.follow) {
    const known = listSources(root).map((s) => s.id);
    throw new UserError(`no logs match ${[...options.ids, ...(options.role ? [`--role ${options.role}`] : [])].join(' ') || 'this experiment'} (processes with logs: ${known.join(', ') || 'none'})`);
  }
  const matches = matcher(options);
  const format = await formatter(options);

  // What is already written, merged in time order.
  const offsets = new Map<string, number>();
  let entries: Entry[] = [];
  for (const source of sources) {
    for (const file of logFiles(source.directory)) {
      const { lines, offset } = readFrom(file, 0);
      offsets.set(file, offset);
      for (const line of lines) {
        const entry = parse(line);
        if (entry && matches(entry)) entries.push(entry);
      }
    }
  }
  entries = byTime(entries);
  const keep = options.lines ?? (options.follow ? 10 : undefined);
  if (keep !== undefined) entries = entries.slice(Math.max(0, entries.length - keep));
  for (const entry of entries) write(format(entry));
  if (!options.follow) return;

  // Then whatever is appended, to these files, to files rotated in, and by processes that start later.
  const pollMs = options.pollMs ?? 250;
  while (!options.signal?.aborted) {
    await sleep(pollMs, undefined, { signal: options.signal }).catch(() => undefined);
    if (options.signal?.aborted) break;
    const batch: Entry[] = [];
    for (const source of listSources(root).filter(wanted)) {
      for (const file of logFiles(source.directory)) {
        const { lines, offset } = readFrom(file, offsets.get(file) ?? 0);
        offsets.set(file, offset);
        for (const line of lines) {
          const entry = parse(line);
          if (entry && matches(entry)) batch.push(entry);
        }
      }
    }
    for (const entry of byTime(batch)) write(format(entry));
  }
}
