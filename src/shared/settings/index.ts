import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseEnv } from 'node:util';
import { loadPriceTable } from '../llm/pricing.ts';
import { DEFAULT_PRICES_FILE, readAgentSettings, type AgentSettings } from './agent.ts';
import { readArchiveSettings, type ArchiveSettings } from './archive.ts';
import { readCoreSettings, type CoreSettings } from './core.ts';
import { translateOriginalSettings, unknownSettingWarnings } from './original.ts';
import { EnvReader, SettingsError, type Env } from './reader.ts';
import { readRepositorySettings, type RepositorySettings } from './repository.ts';
import { readSchedulerSettings, type SchedulerSettings } from './scheduler.ts';
import { readSupervisorSettings, type SupervisorSettings } from './supervisor.ts';
import { readWorkerSettings, type WorkerSettings } from './worker.ts';

export { SettingsError, parseArgv, type Env } from './reader.ts';
export type { AgentSettings } from './agent.ts';
export type { ArchiveSettings } from './archive.ts';
export type { CoreSettings, DatabaseSettings, LogLevel, LogSettings } from './core.ts';
export type { SchedulerSettings } from './scheduler.ts';
export type { SupervisorSettings } from './supervisor.ts';
export type { RepositorySettings } from './repository.ts';
export type { CommandSettings, SandboxSettings, WorkerSettings } from './worker.ts';

/** Everything Loreley reads from its environment, validated once at start-up and frozen. */
export interface Settings extends CoreSettings {
  readonly cwd: string;
  /**
   * One line each: original Loreley names read under their new name, keys with Loreley's prefixes
   * that mean nothing here. Printed once by the command that loaded the settings.
   */
  readonly notices: readonly string[];
  /** The experiment's repository: what both the scheduler and the workers clone, and its root. */
  readonly repository: RepositorySettings;
  readonly worker: WorkerSettings;
  readonly agent: AgentSettings;
  readonly supervisor: SupervisorSettings;
  readonly scheduler: SchedulerSettings;
  readonly archive: ArchiveSettings;
}

export interface LoadSettingsOptions {
  /** Process environment; wins over `.env`. */
  env?: Env;
  cwd?: string;
  /** From CLI flags; win over everything. Keys are the environment variable names. */
  overrides?: Env;
  /** Read `<cwd>/.env` when present (default true). */
  dotenv?: boolean;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export function readDotenv(cwd: string): Record<string, string> {
  const file = path.join(cwd, '.env');
  if (!existsSync(file)) return {};
  try {
    return parseEnv(readFileSync(file, 'utf8')) as Record<string, string>;
  } catch (error) {
    throw new SettingsError([`.env: cannot be read (${(error as Error).message})`]);
  }
}

/** The merged environment settings are read from: `.env`, then the process environment, then overrides. */
export function mergedEnv(options: LoadSettingsOptions = {}): Env {
  const cwd = options.cwd ?? process.cwd();
  const fromFile = options.dotenv === false ? {} : readDotenv(cwd);
  const merged: Record<string, string | undefined> = { ...fromFile, ...(options.env ?? process.env) };
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) merged[key] = value;
  }
  return merged;
}

/**
 * Reads and validates every setting. Throws `SettingsError` listing each problem on its own line;
 * callers print `error.problems` and exit 1.
 */
export function loadSettings(options: LoadSettingsOptions = {}): Settings {
  const cwd = path.resolve(options.cwd ?? process.cwd());
  const { env, notices } = translateOriginalSettings(mergedEnv({ ...options, cwd }));
  const reader = new EnvReader(env);
  const core = readCoreSettings(reader, cwd);
  const settings: Settings = {
    ...core,
    cwd,
    notices,
    repository: readRepositorySettings(reader, cwd),
    worker: readWorkerSettings(reader, cwd, core.dataDir, core.experiment),
    agent: readAgentSettings(reader, cwd),
    supervisor: readSupervisorSettings(reader),
    scheduler: readSchedulerSettings(reader, cwd),
    archive: readArchiveSettings(reader),
  };
  // Read now, not when the first job needs it: a broken file is a settings problem, not a crash loop.
  if (settings.agent.pricesFile !== undefined) {
    try {
      loadPriceTable(DEFAULT_PRICES_FILE, path.resolve(cwd, settings.agent.pricesFile));
    } catch (error) {
      reader.problem('LORELEY_PRICES_FILE', (error as Error).message);
    }
  }
  if (reader.problems.length > 0) throw new SettingsError(reader.problems);
  notices.push(...unknownSettingWarnings(env, reader.read));
  return deepFreeze(settings);
}

/**
 * What the read-only commands (`loreley status`, `logs`, `report`) need: the experiment's identity,
 * its database, its logs, how fitness is read, and the budgets to show progress against. Not the
 * repository, the agent or the evaluator, which a person inspecting a finished run from another
 * directory may not have in their environment.
 */
export interface ReadOnlySettings extends CoreSettings {
  readonly cwd: string;
  readonly archive: ArchiveSettings;
  readonly scheduler: Pick<SchedulerSettings, 'maxTotalJobs'>;
  readonly agent: Pick<AgentSettings, 'maxCostUsd'>;
}

export function loadReadOnlySettings(options: LoadSettingsOptions = {}): ReadOnlySettings {
  const cwd = path.resolve(options.cwd ?? process.cwd());
  // The original's names too (its EXPERIMENT_ID, DB_*), without the notices: the full load shows them.
  const reader = new EnvReader(translateOriginalSettings(mergedEnv({ ...options, cwd })).env);
  const core = readCoreSettings(reader, cwd);
  const maxCost = reader.raw('LORELEY_MAX_COST_USD');
  const settings: ReadOnlySettings = {
    ...core,
    cwd,
    archive: readArchiveSettings(reader),
    scheduler: { maxTotalJobs: reader.optionalInt('SCHEDULER_MAX_TOTAL_JOBS', { min: 0 }) },
    agent: { maxCostUsd: maxCost === undefined ? undefined : reader.float('LORELEY_MAX_COST_USD', 0, { min: 0 }) },
  };
  if (reader.problems.length > 0) throw new SettingsError(reader.problems);
  return deepFreeze(settings);
}
