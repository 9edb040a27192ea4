import { readdirSync, statSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { ExperimentIdentity } from './experiment.ts';
import { RollingLogFile } from './log-file.ts';
import { REDACTED, scrubber } from './storable.ts';
import type { LogSettings } from './settings/index.ts';

export type { Logger } from 'pino';

export type Role = 'supervisor' | 'worker' | 'scheduler' | 'cli';

export interface ProcessLogOptions {
  readonly settings: LogSettings;
  readonly experiment: ExperimentIdentity;
  readonly role: Role;
  readonly workerId: string;
  /** Literal values (passwords, API keys) scrubbed from every line wherever they appear. */
  readonly secrets?: readonly string[];
  /** Tag console lines, e.g. with the worker id when many processes share one terminal. */
  readonly consolePrefix?: string;
}

export interface ProcessLog {
  readonly logger: Logger;
  readonly directory: string;
  /** Writes whatever is buffered; safe to call from an exit handler. */
  flush(): void;
}

const REDACT_PATHS = [
  'password', '*.password', 'apiKey', '*.apiKey', 'api_key', '*.api_key', 'authorization', '*.authorization',
  'headers.authorization', 'databaseUrl', '*.databaseUrl', 'DATABASE_URL', '*.DATABASE_URL',
  'OPENAI_API_KEY', '*.OPENAI_API_KEY', 'token', '*.token',
];
const CENSOR = REDACTED;
const RETENTION_SWEEP_MS = 60 * 60 * 1000;

export function logDirectory(settings: LogSettings, experiment: ExperimentIdentity, role: Role, workerId: string): string {
  return path.join(settings.baseDir, 'logs', experiment.namespace, role, workerId);
}

/** The password of a connection URL, as written and decoded, so it can be scrubbed from free text. */
export function urlPasswords(url: string | undefined): string[] {
  if (!url) return [];
  try {
    const encoded = new URL(url).password;
    if (encoded === '') return [];
    return [...new Set([encoded, decodeURIComponent(encoded)])];
  } catch {
    return [];
  }
}

/** Removes rotated files older than the retention (rotation itself never removes a file). */
export function removeExpiredLogFiles(directory: string, retentionDays: number, now = Date.now()): string[] {
  if (retentionDays <= 0) return [];
  const cutoff = now - retentionDays * 24 * 60 * 60 * 1000;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(directory);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.endsWith('.jsonl')) continue;
    const file = path.join(directory, name);
    try {
      if (statSync(file).mtimeMs < cutoff) {
        unlinkSync(file);
        removed.push(file);
      }
    } catch {
      // Another process of the same slot may have removed it first.
    }
  }
  return removed;
}

/**
 * The console is a convenience; the JSONL file is the record. When stderr is a pipe whose reader
 * is slow (pm2, systemd, a busy terminal) a synchronous write fails with EAGAIN: the line is
 * dropped from the console rather than taking the process down.
 */
function writeConsole(text: string): void {
  try {
    writeSync(2, text);
  } catch {
    // EAGAIN or a closed stderr.
  }
}

const CONSOLE_SKIP = new Set(['time', 'level', 'msg', 'pid', 'host', 'role', 'workerId', 'err']);

/** A text of several lines shows its first on the console: the record keeps it whole, and whoever logs one prints it themselves (the run summary goes to stdout). */
function firstLine(text: string): string {
  const end = text.indexOf('\n');
  return end === -1 ? text : `${text.slice(0, end)} …`;
}

/** One short human-readable line per record on stderr, written synchronously. */
function consoleStream(prefix: string): DestinationStream {
  return {
    write(line: string) {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line);
      } catch {
        writeConsole(line);
        return;
      }
      const time = typeof record.time === 'string' ? record.time.slice(11, 19) : '';
      const level = String(record.level ?? '').toUpperCase().padEnd(5);
      const extras = Object.entries(record)
        .filter(([key]) => !CONSOLE_SKIP.has(key))
        .map(([key, value]) => `${key}=${typeof value === 'string' ? firstLine(value) : JSON.stringify(value)}`)
        .join(' ');
      const err = record.err as { message?: string } | undefined;
      const errText = err?.message ? ` error=${JSON.stringify(err.message)}` : '';
      writeConsole(`${time} ${level} ${prefix}${record.msg ?? ''}${extras ? ` ${extras}` : ''}${errText}\n`);
    },
  };
}

/**
 * The process logger: JSONL into `<base>/logs/<namespace>/<role>/<workerId>/<workerId>.N.jsonl`,
 * rotated by size, plus a console line on stderr. File writes are synchronous so a line logged
 * just before `process.exit()` or a fatal signal is on disk.
 */
export async function createProcessLog(options: ProcessLogOptions): Promise<ProcessLog> {
  const { settings, experiment, role, workerId } = options;
  const directory = logDirectory(settings, experiment, role, workerId);
  removeExpiredLogFiles(directory, settings.retentionDays);
  const file = new RollingLogFile({ directory, name: workerId, maxBytes: Math.max(1024, settings.rotateBytes) });
  const sweep = setInterval(() => removeExpiredLogFiles(directory, settings.retentionDays), RETENTION_SWEEP_MS);
  sweep.unref();

  const streams: pino.StreamEntry[] = [{ stream: file, level: 'trace' }];
  if (settings.console) streams.push({ stream: consoleStream(options.consolePrefix ?? ''), level: 'trace' });
  const scrub = scrubber(options.secrets ?? []);

  const logger = pino(
    {
      level: settings.level,
      base: { workerId, role, pid: process.pid, host: os.hostname() },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      hooks: { streamWrite: scrub },
    },
    pino.multistream(streams, { levels: pino.levels.values, dedupe: false }),
  );

  return {
    logger,
    directory,
    flush() {
      try {
        file.flushSync();
      } catch {
        // Nothing buffered, or the file is already closed.
      }
    },
  };
}

/** A console-only logger for short CLI commands that need no log file. */
export function createConsoleLogger(level: string, secrets: readonly string[] = []): Logger {
  return pino(
    {
      level,
      base: { role: 'cli', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      hooks: { streamWrite: scrubber(secrets) },
    },
    consoleStream(''),
  );
}
