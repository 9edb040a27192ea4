import { PgBoss, type Db } from 'pg-boss';
import type { PoolClient } from './db/pool.ts';
import type { Settings } from './settings/index.ts';

export { PgBoss } from 'pg-boss';

/** The message a queue job carries: only the id; the row in `evolution_jobs` is the truth. */
export interface EvolutionJobMessage {
  readonly jobId: string;
}

export interface BossOptions {
  readonly url: string;
  readonly settings: Settings;
  readonly applicationName: string;
  /** Run pg-boss maintenance and monitoring (expiry, heartbeats) from this process. */
  readonly supervise: boolean;
}

/**
 * A pg-boss instance with a small pool. LISTEN/NOTIFY wakes idle workers as soon as a job is sent
 * instead of waiting for the next poll.
 */
export function createBoss(options: BossOptions): PgBoss {
  return new PgBoss({
    connectionString: options.url,
    schema: options.settings.database.bossSchema,
    max: options.settings.database.poolMax,
    application_name: options.applicationName,
    useListenNotify: true,
    supervise: options.supervise,
    schedule: false,
    migrate: true,
    registerInstance: false,
  });
}

/** Creates or updates the experiment's queue and its dead-letter queue from settings. */
export async function ensureQueues(boss: PgBoss, settings: Settings): Promise<void> {
  const queue = settings.queue;
  const policy = {
    retryLimit: queue.maxRetries,
    retryDelay: queue.retryDelaySeconds,
    retryBackoff: queue.retryBackoff,
    expireInSeconds: queue.timeLimitSeconds,
    heartbeatSeconds: queue.heartbeatSeconds,
  };
  await createOrUpdate(boss, queue.deadLetterName, { retryLimit: 0 });
  await createOrUpdate(boss, queue.name, { ...policy, deadLetter: queue.deadLetterName, notify: true });
}

async function createOrUpdate(boss: PgBoss, name: string, options: Record<string, unknown>): Promise<void> {
  const existing = await boss.getQueue(name);
  if (existing) {
    const { notify: _notify, ...updatable } = options;
    await boss.updateQueue(name, updatable);
  } else {
    try {
      await boss.createQueue(name, options);
    } catch (error) {
      // Another process created it between our read and our create.
      if (!(await boss.getQueue(name))) throw error;
    }
  }
}

/** pg-boss's executor over a client already inside our transaction. */
export function transactionDb(client: PoolClient): Db {
  return {
    async executeSql(text: string, values?: unknown[]) {
      const result = await client.query(text, values as unknown[]);
      return { rows: result.rows };
    },
  };
}
