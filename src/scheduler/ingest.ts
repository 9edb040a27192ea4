import { listAwaitingIngestion, recordIngestion, recordIngestionAttempt } from '../shared/db/jobs.ts';
import { errorMessage } from '../shared/errors.ts';
import type { IngestionOutcome } from './archive/archive.ts';
import type { SchedulerContext } from './context.ts';

/** Ingestion of one job is tried this many times before its failure is final. */
const MAX_INGESTION_ATTEMPTS = 3;

/**
 * Stage 1, ingest: succeeded jobs into the MAP-Elites archive, oldest first. A failure is counted
 * on its job, which stays awaiting ingestion for the next ticks (a transient git or network error
 * should not lose a result) and is marked failed after MAX_INGESTION_ATTEMPTS.
 *
 * A refit falling due is computed off the tick (`MapElitesArchive.startRefit`): the stage stops
 * ingesting, and the ticks that follow dispatch and schedule as usual and ingest nothing until the
 * refit is ready; the first stage that finds it ready applies it, then ingests. So the refit always
 * lands between the ingestion it was due at and the next, whatever the timing: a replay of the
 * same ingestions gets the same archive.
 */
export async function ingestStage(context: SchedulerContext): Promise<Array<IngestionOutcome | Error>> {
  const { pool, logger, archive } = context;
  if (!(await archive.applyPendingRefit()) || (await archive.resumeDueRefit())) {
    logger.debug('a behaviour projection refit is computing: ingestion waits for it');
    return [];
  }
  const jobs = await listAwaitingIngestion(pool, context.experimentId, context.settings.scheduler.ingestBatchSize);
  // Reading the commits (their files and vectors) is the slow part and can overlap; placing them
  // in the archive stays one at a time, in order.
  await archive.prepare(jobs, context.settings.scheduler.ingestConcurrency);
  const outcomes: Array<IngestionOutcome | Error> = [];
  for (const job of jobs) {
    try {
      const outcome = await archive.ingest(job, { refit: 'defer' });
      logger.info({ jobId: job.id, commit: outcome.commit, fitness: outcome.fitness, status: outcome.status, reason: outcome.reason }, 'job ingested');
      outcomes.push(outcome);
      if (archive.refitPending) break;
    } catch (error) {
      const reason = `ingestion failed: ${errorMessage(error)}`;
      const attempts = await recordIngestionAttempt(pool, job.id, reason);
      if (attempts >= MAX_INGESTION_ATTEMPTS) {
        logger.warn({ jobId: job.id, err: error, attempts }, `${reason} (giving up)`);
        await recordIngestion(pool, job.id, { status: 'failed', delta: null, cell: null, reason });
      } else {
        logger.warn({ jobId: job.id, err: error, attempts }, `${reason} (will try again next tick)`);
      }
      outcomes.push(error instanceof Error ? error : new Error(reason));
    }
  }
  return outcomes;
}
