import os from 'node:os';
import path from 'node:path';
import { defaultQueueName, resolveExperiment, type ExperimentIdentity } from '../experiment.ts';
import { parseSize, type EnvReader } from './reader.ts';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface DatabaseSettings {
  /** Unset means the supervisor starts an embedded PostgreSQL and hands its URL down. */
  readonly url: string | undefined;
  /** Schema holding Loreley's own tables. */
  readonly schema: string;
  /** Schema pg-boss installs into. */
  readonly bossSchema: string;
  /** Connections per process for Loreley's pool; pg-boss gets its own of the same size. */
  readonly poolMax: number;
}

export interface LogSettings {
  readonly level: LogLevel;
  readonly baseDir: string;
  readonly rotateBytes: number;
  readonly retentionDays: number;
  readonly console: boolean;
}

export interface QueueSettings {
  readonly name: string;
  readonly deadLetterName: string;
  readonly maxRetries: number;
  readonly retryDelaySeconds: number;
  readonly retryBackoff: boolean;
  readonly timeLimitSeconds: number;
  readonly heartbeatSeconds: number;
  readonly pollingIntervalSeconds: number;
}

export interface CoreSettings {
  readonly experiment: ExperimentIdentity;
  /** Where Loreley keeps local state: the embedded database, base clones, locks. */
  readonly dataDir: string;
  /** This supervisor's name among the experiment's hosts (LORELEY_HOST_ID, default the hostname). */
  readonly hostId: string;
  readonly database: DatabaseSettings;
  readonly logs: LogSettings;
  readonly queue: QueueSettings;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
const HOST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function hostId(reader: EnvReader): string {
  const value = reader.optionalString('LORELEY_HOST_ID');
  if (value === undefined) return os.hostname();
  if (!HOST_ID.test(value)) {
    reader.problem('LORELEY_HOST_ID', `must be 1-63 letters, digits, '.', '_' or '-' (got ${JSON.stringify(value)})`);
    return os.hostname();
  }
  return value;
}
const PLACEHOLDER_EXPERIMENT = resolveExperiment('unset');

function experimentFrom(reader: EnvReader): ExperimentIdentity {
  const raw = reader.requiredString('EXPERIMENT_ID', 'a UUID or a short slug such as circle-packing');
  if (raw === '') return PLACEHOLDER_EXPERIMENT;
  try {
    return resolveExperiment(raw);
  } catch (error) {
    reader.problem('EXPERIMENT_ID', (error as Error).message);
    return PLACEHOLDER_EXPERIMENT;
  }
}

function identifier(reader: EnvReader, name: string, fallback: string): string {
  const value = reader.string(name, fallback);
  if (!IDENTIFIER.test(value)) {
    reader.problem(name, `must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), got ${JSON.stringify(value)}`);
    return fallback;
  }
  return value;
}

function databaseUrl(reader: EnvReader): string | undefined {
  const url = reader.optionalString('DATABASE_URL');
  if (url === undefined) return undefined;
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
      reader.problem('DATABASE_URL', `must start with postgres:// or postgresql://, got ${parsed.protocol}//`);
    }
  } catch {
    reader.problem('DATABASE_URL', 'is not a valid URL (expected postgres://user:password@host:port/database)');
  }
  return url;
}

export function readCoreSettings(reader: EnvReader, cwd: string): CoreSettings {
  const experiment = experimentFrom(reader);
  const dataDir = path.resolve(cwd, reader.string('LORELEY_DATA_DIR', '.loreley'));
  const host = hostId(reader);
  const database: DatabaseSettings = {
    url: databaseUrl(reader),
    schema: identifier(reader, 'DATABASE_SCHEMA', 'loreley'),
    bossSchema: identifier(reader, 'PGBOSS_SCHEMA', 'pgboss'),
    poolMax: reader.int('DATABASE_POOL_MAX', 3, { min: 1, max: 100 }),
  };

  const rotateRaw = reader.string('LOG_ROTATE_SIZE', '10m');
  let rotateBytes = parseSize(rotateRaw);
  if (rotateBytes === undefined || rotateBytes < 1024) {
    reader.problem('LOG_ROTATE_SIZE', `must be a size of at least 1k such as 10m or 512k, got ${JSON.stringify(rotateRaw)}`);
    rotateBytes = 10 * 1024 * 1024;
  }
  const logs: LogSettings = {
    level: reader.choice('LOG_LEVEL', LOG_LEVELS, 'info'),
    baseDir: path.resolve(cwd, reader.string('LOGS_BASE_DIR', '.')),
    rotateBytes,
    retentionDays: reader.float('LOG_RETENTION_DAYS', 14, { min: 0 }),
    console: reader.bool('LOG_CONSOLE', true),
  };

  const name = reader.string('TASKS_QUEUE_NAME', defaultQueueName(experiment));
  const timeLimitSeconds = reader.int('TASKS_WORKER_TIME_LIMIT_SECONDS', 3600, { min: 1 });
  const queue: QueueSettings = {
    name,
    deadLetterName: `${name}.dead`,
    maxRetries: reader.int('TASKS_WORKER_MAX_RETRIES', 0, { min: 0, max: 100 }),
    retryDelaySeconds: reader.int('TASKS_WORKER_RETRY_DELAY_SECONDS', 10, { min: 0 }),
    retryBackoff: reader.bool('TASKS_WORKER_RETRY_BACKOFF', true),
    timeLimitSeconds,
    // pg-boss requires heartbeats of at least 10 s.
    heartbeatSeconds: reader.int('TASKS_WORKER_HEARTBEAT_SECONDS', 30, { min: 10 }),
    pollingIntervalSeconds: reader.float('TASKS_POLLING_INTERVAL_SECONDS', 2, { min: 0.5 }),
  };

  return { experiment, dataDir, hostId: host, database, logs, queue };
}
