import { ensureExperiment } from './db/experiments.ts';
import { migrate } from './db/migrations/index.ts';
import { createPool, type Pool } from './db/pool.ts';
import { errorMessage } from './errors.ts';
import { createBoss, ensureQueues, type PgBoss } from './queue.ts';
import type { Settings } from './settings/index.ts';

/**
 * An experiment's database as a worker or scheduler uses it: a pool on Loreley's schema, the
 * schema migrated, the experiment's row, and a started pg-boss with the experiment's queues.
 * `openExperimentDatabase` is the one way to get there: the child runtime, the tests and the
 * benchmarks all call it, so they run on the same wiring (pg-boss options, migrations, queue
 * policy).
 */
export interface ExperimentDatabase {
  readonly pool: Pool;
  readonly boss: PgBoss;
  /** Migration versions this call applied; empty when the schema was already current. */
  readonly migrated: readonly number[];
  /**
   * Stops the queue (a graceful stop waits up to `timeoutMs` for jobs in hand, then fails them)
   * and ends the pool. Rejects with the queue's error after the pool has ended anyway.
   */
  close(options?: { readonly graceful?: boolean; readonly timeoutMs?: number }): Promise<void>;
}

export interface OpenExperimentDatabaseOptions {
  readonly settings: Settings;
  /** The server; `settings.database.url` by default (unset means the embedded database is not up yet). */
  readonly url?: string;
  /** Postgres `application_name` of the pool; the queue's connections get `<name>-queue`. */
  readonly applicationName: string;
  /** Run pg-boss maintenance (expiry, heartbeat monitor) from this process: the scheduler does. */
  readonly supervise: boolean;
  /** LISTEN for sent jobs (see `BossOptions.listen`): a worker nobody else wakes. */
  readonly listen?: boolean;
  /** pg-boss reports errors (a lost connection, a failed poll) as events; they go here. */
  readonly onQueueError?: (error: Error) => void;
}

/** Opens the database and the queue; a failure closes what was opened and throws one line. */
export async function openExperimentDatabase(options: OpenExperimentDatabaseOptions): Promise<ExperimentDatabase> {
  const { settings } = options;
  const url = options.url ?? settings.database.url;
  if (!url) throw new Error('no database URL: DATABASE_URL is not set and no embedded database was started');
  const pool = createPool({ url, settings: settings.database, applicationName: options.applicationName });
  const boss = createBoss({ url, settings, applicationName: `${options.applicationName}-queue`, supervise: options.supervise, listen: options.listen });
  boss.on('error', options.onQueueError ?? (() => undefined));
  let migrated: number[];
  try {
    migrated = await migrate(pool, settings.database.schema);
    await ensureExperiment(pool, settings.experiment);
    await boss.start({ attempts: 5 });
    await ensureQueues(boss, settings);
  } catch (error) {
    await boss.stop({ graceful: false, close: true }).catch(() => undefined);
    await pool.end().catch(() => undefined);
    throw new Error(`cannot connect to the database or queue: ${errorMessage(error)}`, { cause: error });
  }
  return {
    pool,
    boss,
    migrated,
    async close({ graceful = true, timeoutMs = 5000 } = {}) {
      let failure: unknown;
      await boss.stop({ graceful, close: true, timeout: timeoutMs }).catch((error: unknown) => (failure = error));
      await pool.end().catch(() => undefined);
      if (failure !== undefined) throw failure;
    },
  };
}
