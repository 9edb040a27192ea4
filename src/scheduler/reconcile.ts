import { listByStatus, lockForReconcile, markFinished, markResent, QUEUED_STATUSES, type EvolutionJob } from '../shared/db/jobs.ts';
import { databaseNow } from '../shared/db/notes.ts';
import { withTransaction } from '../shared/db/pool.ts';
import { handBackLostJob } from '../shared/lost-jobs.ts';
import { cancelQueueJob, queueJobFate, sendEvolutionJob, type QueueJobFate } from '../shared/queue.ts';
import type { SchedulerContext } from './context.ts';

export interface ReconcileResult {
  checked: number;
  failed: number;
  resent: number;
  /** Jobs whose worker was lost (host gone, heartbeat lapsed), handed back with the attempt returned. */
  handedBack?: number;
}

type Action = { readonly kind: 'fail' | 'resend' | 'hand-back'; readonly reason: string };

/**
 * Stage 3, reconcile: compares queued and running jobs with what became of their queue jobs. A
 * queue job that failed (retries spent, or expired), was cancelled, or completed while the row
 * never finished marks the job failed; a queue job that is missing is sent again while the job
 * was only queued (up to SCHEDULER_MAX_RESENDS times) and marks it failed when it was running.
 *
 * A job whose worker was lost (a whole host died, so no supervisor handed it back) is found by its
 * lapsed queue heartbeat, by us or by pg-boss's own sweep, whichever comes first, and handed back
 * with its attempt returned: a lost worker is not a failure of the job, whatever the retry setting.
 */
export async function reconcileStage(context: SchedulerContext): Promise<ReconcileResult> {
  const { settings, pool, boss, logger } = context;
  const result: ReconcileResult = { checked: 0, failed: 0, resent: 0 };
  const judgeHeartbeat = Date.now() >= (context.heartbeatsTrustedAfter ?? 0);
  const queue = settings.queue.name;
  const jobs = await listByStatus(pool, context.experimentId, QUEUED_STATUSES, 10_000);
  // Heartbeats are stamped by the database's clock (pg-boss writes now()), from workers on any
  // host: judged against that clock too, never this host's, which may be minutes off.
  const now = judgeHeartbeat && jobs.length > 0 ? (await databaseNow(pool)).getTime() : undefined;
  for (const job of jobs) {
    result.checked += 1;
    const action = decide(job, await queueJobFate(boss, queue, job.queueJobId, { judgeHeartbeat, now }), settings.scheduler.maxResends);
    if (!action) continue;
    if (action.kind === 'hand-back') {
      if (job.queueJobId && (await handBackLostJob(pool, boss, queue, { jobId: job.id, queueJobId: job.queueJobId }, action.reason))) {
        result.handedBack = (result.handedBack ?? 0) + 1;
        logger.warn({ jobId: job.id, queueJobId: job.queueJobId, action: action.kind, reason: action.reason }, 'job of a lost worker handed back');
      }
      continue;
    }
    const applied = await withTransaction(pool, async (client) => {
      const current = await lockForReconcile(client, job.id);
      // Changed since we looked (the worker finished it, or is holding it now): not stuck.
      if (!current || current.status !== job.status || current.queueJobId !== job.queueJobId) return false;
      if (action.kind === 'fail') {
        await markFinished(client, job.id, 'failed', action.reason);
      } else {
        // A queued job's old queue job may still be waiting in pg-boss (a lost fetch): it must not run beside the new one.
        if (job.queueJobId) await cancelQueueJob(boss, queue, job.queueJobId, client);
        await markResent(client, job.id, await sendEvolutionJob(boss, queue, job, client), action.reason);
      }
      return true;
    });
    if (!applied) continue;
    if (action.kind === 'fail') result.failed += 1;
    else result.resent += 1;
    logger.warn({ jobId: job.id, status: job.status, queueJobId: job.queueJobId, action: action.kind, reason: action.reason }, 'stuck job reconciled');
  }
  return result;
}

function decide(job: EvolutionJob, fate: QueueJobFate, maxResends: number): Action | undefined {
  const lastError = job.lastError ? ` (last error: ${job.lastError})` : '';
  if ('lostWorker' in fate && fate.lostWorker) {
    const reason = `${fate.lostWorker}: handed back, the attempt given back`;
    if (job.status === 'running') return { kind: 'hand-back', reason };
    // Fetched by a worker that died before claiming it: send it again.
    return { kind: 'resend', reason };
  }
  switch (fate.state) {
    case 'active':
      return undefined;
    case 'missing': {
      if (job.status === 'running') return { kind: 'fail', reason: `${fate.reason} while the job was running` };
      if (job.resends >= maxResends) return { kind: 'fail', reason: `${fate.reason}, and it was already sent again ${job.resends} times` };
      return { kind: 'resend', reason: `${fate.reason}; sent again` };
    }
    case 'failed':
      return { kind: 'fail', reason: `${fate.reason}${lastError}` };
    case 'cancelled':
      return { kind: 'fail', reason: fate.reason };
    case 'completed':
      return { kind: 'fail', reason: `${fate.reason} but the job was left ${job.status}${lastError}` };
  }
}
