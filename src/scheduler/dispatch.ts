import { lockPendingForDispatch, markQueued } from '../shared/db/jobs.ts';
import { withTransaction } from '../shared/db/pool.ts';
import { sendEvolutionJob } from '../shared/queue.ts';
import type { SchedulerContext } from './context.ts';

/**
 * Stage 2, dispatch: sends pending jobs, highest priority then oldest, to the queue. Each queue
 * job and its row's `queued` status commit in one transaction, so neither exists without the other.
 */
export async function dispatchStage(context: SchedulerContext): Promise<number> {
  const { settings, boss, logger } = context;
  return withTransaction(context.pool, async (client) => {
    const jobs = await lockPendingForDispatch(client, context.experimentId, settings.scheduler.dispatchBatchSize);
    for (const job of jobs) {
      const queueJobId = await sendEvolutionJob(boss, settings.queue.name, job, client);
      await markQueued(client, job.id, queueJobId);
    }
    if (jobs.length > 0) logger.debug({ jobs: jobs.map((job) => job.id) }, 'jobs dispatched');
    return jobs.length;
  });
}
