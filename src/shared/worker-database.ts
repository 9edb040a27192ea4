import { ensureExperiment } from './db/experiments.ts';
import { migrate } from './db/migrations/index.ts';
import { createPool, type Pool } from './db/pool.ts';
import { errorMessage } from './errors.ts';
import { assertPinnedPgBoss, queueDrift } from './queue-statements.ts';
import type { Settings } from './settings/index.ts';

/**
 * An experiment's database as a worker uses it: a pool on Loreley's schema, migrated, with the
 * experiment's row and the experiment's queue as the settings describe it, and no pg-boss
 * runtime: the worker runs pg-boss's statements itself (`queue-statements.ts`). Only when the
 * queue is not there yet or differs from the settings (a fresh database, an upgrade, a changed
 * retry policy) is pg-boss loaded, once, to install or update it exactly as the scheduler does
 * (`experiment-database.ts`); the modules stay loaded in that process.
 */
export interface WorkerDatabase {
  readonly pool: Pool;
  /** Migration versions this call applied; empty when the schema was already current. */
  readonly migrated: readonly number[];
  /** What pg-boss had to install or update at start (null: nothing, pg-boss was not loaded). */
  readonly queueUpdated: string | null;
  close(): Promise<void>;
}

/** Opens the worker's database; a failure closes what was opened and throws one line. */
export async function openWorkerDatabase(options: { readonly settings: Settings; readonly url: string; readonly applicationName: string }): Promise<WorkerDatabase> {
  const { settings, url } = options;
  // Before anything: a worker on another pg-boss must not run statements written for this one.
  assertPinnedPgBoss();
  const pool = createPool({ url, settings: settings.database, applicationName: options.applicationName });
  let migrated: number[];
  let drift: string | null;
  try {
    migrated = await migrate(pool, settings.database.schema);
    await ensureExperiment(pool, settings.experiment);
    drift = await queueDrift(pool, settings);
    if (drift) {
      const { openExperimentDatabase } = await import('./experiment-database.ts');
      const database = await openExperimentDatabase({ settings, url, applicationName: `${options.applicationName}-setup`, supervise: false, listen: false });
      await database.close({ graceful: false });
    }
  } catch (error) {
    await pool.end().catch(() => undefined);
    if (error instanceof Error && error.message.startsWith('cannot connect to the database or queue')) throw error;
    throw new Error(`cannot connect to the database or queue: ${errorMessage(error)}`, { cause: error });
  }
  return {
    pool,
    migrated,
    queueUpdated: drift,
    async close() {
      await pool.end().catch(() => undefined);
    },
  };
}
