import { isUuid } from './experiment.ts';
import { handBack, lockJob } from './db/jobs.ts';
import { withTransaction, type Pool } from './db/pool.ts';
import type { HeldJob } from './ipc.ts';
import { cancelQueueJob, sendEvolutionJob, type PgBoss } from './queue.ts';

/**
 * A job whose worker was lost (the process killed, its host gone, its queue heartbeat stale) did
 * not fail: it is handed back to the queue on a fresh queue job with its attempt given back, so it
 * runs again whatever `TASKS_WORKER_MAX_RETRIES` says. Only a failure of the job itself counts.
 *
 * One transaction: the row is locked (waiting for a dead worker's open transaction, which Postgres
 * rolls back when its connection drops), and nothing happens unless the row is still running on
 * that very queue job: a job the worker finished, failed or handed back itself before dying, or
 * that someone else handed back already, is left alone. So the supervisor and the scheduler may
 * both try, in any order, and the job is handed back once.
 */
export async function handBackLostJob(pool: Pool, boss: PgBoss, queueName: string, held: HeldJob, reason: string): Promise<boolean> {
  if (!isUuid(held.jobId) || !isUuid(held.queueJobId)) return false;
  return withTransaction(pool, async (client) => {
    const row = await lockJob(client, held.jobId);
    if (!row || row.status !== 'running' || row.queueJobId !== held.queueJobId) return false;
    // Cancel rather than fail: a failure would use up a retry (or, pg-boss's sweep having got there
    // first, a queued retry would run the job a second time beside the fresh one).
    await cancelQueueJob(boss, queueName, held.queueJobId, client);
    const fresh = await sendEvolutionJob(boss, queueName, row, client);
    return handBack(client, held.jobId, held.queueJobId, fresh, reason);
  });
}
