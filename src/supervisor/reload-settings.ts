import { loadSettings, mergedEnv, type Env, type Settings } from '../shared/settings/index.ts';

/**
 * The supervisor is the only process that reads `.env`: at start-up and again on a reload. What it
 * read is kept as a snapshot (the merged environment the settings were parsed from) and handed to
 * every child over IPC, so a child restarted after a crash runs with exactly its siblings'
 * settings, and an edited `.env` changes nothing until a reload.
 */

export interface SettingsSnapshot {
  readonly settings: Settings;
  /** The merged `.env` + environment + flag overrides the settings were parsed from. */
  readonly env: Readonly<Record<string, string>>;
}

/** Reads `.env`, the environment and the flag overrides and validates them; throws `SettingsError`. */
export function readSettingsSnapshot(overrides: Env, cwd: string = process.cwd(), env: Env = process.env): SettingsSnapshot {
  const merged: Record<string, string> = {};
  for (const [key, value] of Object.entries(mergedEnv({ overrides, cwd, env }))) if (value !== undefined) merged[key] = value;
  const settings = loadSettings({ env: merged, cwd, dotenv: false });
  return { settings, env: Object.freeze(merged) };
}

/**
 * Credentials a child must not carry in its own environment: a command it runs could read
 * `/proc/<child pid>/environ`. The child gets them inside its settings snapshot instead. Git's
 * own credentials (a credential helper, GIT_ASKPASS, an SSH agent) are left alone: the worker's
 * git push needs them.
 */
const WITHHELD_FROM_CHILDREN = /^(DATABASE_URL|LORELEY_TEST_DATABASE_URL|PG[A-Z]*|OPENAI_API_KEY|ANTHROPIC_API_KEY|NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID)$/;

/**
 * The environment a child is forked with: the supervisor's own minus the credentials (and
 * systemd's notify variables, which are the supervisor's alone). `cluster.fork` merges its argument
 * over `process.env`, and `child_process` leaves out keys whose value is undefined.
 */
export function childProcessEnv(extra: Record<string, string>, env: Env = process.env): Record<string, string | undefined> {
  const result: Record<string, string | undefined> = {};
  for (const key of Object.keys(env)) if (WITHHELD_FROM_CHILDREN.test(key)) result[key] = undefined;
  return { ...result, ...extra };
}

/** Settings a running supervisor cannot change in place: a reload that changes one is refused. */
const FIXED: ReadonlyArray<readonly [string, (s: Settings) => unknown]> = [
  ['EXPERIMENT_ID', (s) => s.experiment.uuid],
  ['DATABASE_URL', (s) => s.database.url ?? ''],
  ['DATABASE_SCHEMA', (s) => s.database.schema],
  ['PGBOSS_SCHEMA', (s) => s.database.bossSchema],
  ['LORELEY_DATA_DIR', (s) => s.dataDir],
  ['TASKS_QUEUE_NAME', (s) => s.queue.name],
  ['SUPERVISOR_WORKERS', (s) => s.supervisor.workers],
  ['SUPERVISOR_SCHEDULER', (s) => s.supervisor.scheduler],
  ['SUPERVISOR_WORKER_ID_PREFIX', (s) => s.supervisor.workerIdPrefix],
  ['SUPERVISOR_SCHEDULER_ID_PREFIX', (s) => s.supervisor.schedulerIdPrefix],
];

/** Names of the settings that differ and need a restart, empty when a reload can apply `next`. */
export function changesNeedingRestart(current: Settings, next: Settings): string[] {
  return FIXED.filter(([, read]) => read(current) !== read(next)).map(([name]) => name);
}
