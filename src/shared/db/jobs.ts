import { storableText } from '../storable.ts';
import type { Queryable } from './pool.ts';
import { presenceUpsertSql, type WorkerPresence } from './workers.ts';

/** SQL for `evolution_jobs`: every statement about a job's life lives here. */

export const JOB_STATUSES = ['pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
/** A job not yet finished: the unfinished cap and the budget count these. */
export const UNFINISHED_STATUSES: readonly JobStatus[] = ['pending', 'queued', 'running'];
/** A job the queue has: sent and not finished. */
export const QUEUED_STATUSES: readonly JobStatus[] = ['queued', 'running'];
/** A job that ran to an end (not cancelled): what the cost budget averages over. */
export const COMPLETED_STATUSES: readonly JobStatus[] = ['succeeded', 'failed'];

export interface EvolutionJob {
  readonly id: string;
  readonly experimentId: string;
  readonly kind: string;
  readonly status: JobStatus;
  readonly baseCommit: string;
  readonly inspirations: string[];
  readonly goal: string | null;
  readonly payload: Record<string, unknown>;
  readonly island: number;
  readonly priority: number;
  readonly createdAt: Date;
  readonly queuedAt: Date | null;
  readonly startedAt: Date | null;
  readonly finishedAt: Date | null;
  readonly workerId: string | null;
  readonly attempts: number;
  /** Times reconcile sent the job again after its queue job vanished. */
  readonly resends: number;
  readonly queueJobId: string | null;
  readonly resultCommit: string | null;
  readonly lastError: string | null;
  readonly ingestionStatus: string | null;
  readonly ingestionDelta: number | null;
  readonly ingestionCell: unknown;
  readonly ingestionReason: string | null;
  /** Failed ingestions so far; the scheduler gives up after a few. */
  readonly ingestionAttempts: number;
}

const COLUMNS = `
  id, experiment_id AS "experimentId", kind, status, base_commit AS "baseCommit", inspirations, goal, payload,
  island, priority, created_at AS "createdAt", queued_at AS "queuedAt", started_at AS "startedAt",
  finished_at AS "finishedAt", worker_id AS "workerId", attempts, resends, queue_job_id AS "queueJobId",
  result_commit AS "resultCommit", last_error AS "lastError", ingestion_status AS "ingestionStatus",
  ingestion_delta AS "ingestionDelta", ingestion_cell AS "ingestionCell", ingestion_reason AS "ingestionReason",
  ingestion_attempts AS "ingestionAttempts"`;

export interface NewJob {
  readonly experimentId: string;
  readonly baseCommit: string;
  readonly kind?: string;
  readonly inspirations?: readonly string[];
  readonly goal?: string | null;
  readonly payload?: Record<string, unknown>;
  readonly island?: number;
  readonly priority?: number;
}

export async function insertJob(db: Queryable, job: NewJob): Promise<EvolutionJob> {
  const { rows } = await db.query<EvolutionJob>(
    // clock_timestamp, not now(): jobs inserted in one transaction keep their order for dispatch.
    `INSERT INTO evolution_jobs (experiment_id, kind, base_commit, inspirations, goal, payload, island, priority, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp())
     RETURNING ${COLUMNS}`,
    [
      job.experimentId, job.kind ?? 'evolution', job.baseCommit, JSON.stringify(job.inspirations ?? []),
      job.goal ?? null, JSON.stringify(job.payload ?? {}), job.island ?? 0, job.priority ?? 0,
    ],
  );
  return rows[0];
}

export async function getJob(db: Queryable, id: string): Promise<EvolutionJob | undefined> {
  const { rows } = await db.query<EvolutionJob>(`SELECT ${COLUMNS} FROM evolution_jobs WHERE id = $1`, [id]);
  return rows[0];
}

/**
 * What a claim found: the job now running for this attempt; `locked` when another transaction
 * holds the row (`skipLocked` claims only); or the row as it was (absent: no such job).
 */
export type ClaimResult =
  | { readonly claimed: EvolutionJob; readonly locked?: undefined }
  | { readonly claimed?: undefined; readonly locked: true }
  | { readonly claimed?: undefined; readonly locked?: undefined; readonly found?: { readonly experimentId: string; readonly status: JobStatus } };

export interface Claim {
  readonly experimentId: string;
  readonly workerId: string;
  readonly host: string;
  readonly queueJobId: string;
  /** The claiming process's presence, recorded by the same statement when the claim succeeds. */
  readonly presence?: WorkerPresence;
  /**
   * A row another transaction holds is reported as `locked` instead of failing the statement
   * (55P03), so the caller's transaction goes on: the worker's, which fetched the queue job in it.
   */
  readonly skipLocked?: boolean;
}

/**
 * Claims a job for one attempt in one statement: locks the row without waiting (Postgres error
 * 55P03 when another transaction holds it, or `locked` with `skipLocked`; the caller turns either
 * into `JobLockConflict`) and moves it to running when it belongs to `experimentId` and
 * is pending or queued, or still running on this very queue job (the queue's retry after its
 * worker died). Otherwise nothing changes and the row is returned as found, for the caller to say
 * why.
 */
export async function claimJob(db: Queryable, id: string, claim: Claim): Promise<ClaimResult> {
  const { presence } = claim;
  const recordPresence = presence
    ? `, presence AS (
         ${presenceUpsertSql('SELECT $6::uuid, $7::text, $8::text, $9::text, $10::int, $11::text, claimed.id, now() FROM claimed')}
       )`
    : '';
  const { rows } = await db.query<EvolutionJob & { exists: boolean; foundExperimentId: string | null; foundStatus: JobStatus }>(
    `WITH locked AS (
       SELECT id AS locked_id, experiment_id AS locked_experiment, status AS locked_status, queue_job_id AS locked_queue_job
         FROM evolution_jobs WHERE id = $1 FOR UPDATE ${claim.skipLocked ? 'SKIP LOCKED' : 'NOWAIT'}
     ), claimed AS (
       UPDATE evolution_jobs
          SET status = 'running', started_at = now(), updated_at = now(), worker_id = $2, worker_host = $3,
              queue_job_id = $4, attempts = attempts + 1, last_error = NULL
         FROM locked
        WHERE id = locked_id AND locked_experiment = $5
          AND (locked_status IN ('pending', 'queued') OR (locked_status = 'running' AND locked_queue_job = $4))
       RETURNING ${COLUMNS}
     )${recordPresence}
     SELECT EXISTS (SELECT 1 FROM evolution_jobs WHERE id = $1) AS exists,
            locked_experiment AS "foundExperimentId", locked_status AS "foundStatus", claimed.*
       FROM (SELECT 1) AS one LEFT JOIN locked ON true LEFT JOIN claimed ON true`,
    [
      id, claim.workerId, claim.host, claim.queueJobId, claim.experimentId,
      ...(presence ? [presence.experimentId, presence.host, presence.workerId, presence.role, presence.pid, presence.state] : []),
    ],
  );
  const { exists, foundExperimentId, foundStatus, ...job } = rows[0];
  if (job.id) return { claimed: job };
  if (!exists) return {};
  if (foundExperimentId === null) return { locked: true };
  return { found: { experimentId: foundExperimentId, status: foundStatus } };
}

/** Locks the row, waiting for a transaction that holds it (a dead worker's ends with its connection). */
export async function lockJob(db: Queryable, id: string): Promise<EvolutionJob | undefined> {
  const { rows } = await db.query<EvolutionJob>(`SELECT ${COLUMNS} FROM evolution_jobs WHERE id = $1 FOR UPDATE`, [id]);
  return rows[0];
}

export async function markRunning(db: Queryable, id: string, worker: { workerId: string; host: string; queueJobId: string }): Promise<EvolutionJob> {
  const { rows } = await db.query<EvolutionJob>(
    `UPDATE evolution_jobs
        SET status = 'running', started_at = now(), updated_at = now(), worker_id = $2, worker_host = $3,
            queue_job_id = $4, attempts = attempts + 1, last_error = NULL
      WHERE id = $1
      RETURNING ${COLUMNS}`,
    [id, worker.workerId, worker.host, worker.queueJobId],
  );
  return rows[0];
}

/** Finishes the attempt on `queueJobId`; false when that attempt no longer holds the job. */
export async function markSucceeded(db: Queryable, id: string, queueJobId: string, resultCommit: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE evolution_jobs
        SET status = 'succeeded', result_commit = $3, finished_at = now(), updated_at = now(),
            last_error = NULL, ingestion_status = 'pending'
      WHERE id = $1 AND status = 'running' AND queue_job_id = $2`,
    [id, queueJobId, resultCommit],
  );
  return rowCount === 1;
}

/**
 * Records a result kept on disk through a database outage: any job not finished yet (the attempt
 * may have been handed back meanwhile) becomes succeeded; false when it had finished already.
 */
export async function markSucceededUnfinished(db: Queryable, id: string, resultCommit: string): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE evolution_jobs
        SET status = 'succeeded', result_commit = $2, finished_at = now(), updated_at = now(),
            last_error = NULL, ingestion_status = 'pending', worker_id = NULL, worker_host = NULL
      WHERE id = $1 AND status IN ('pending', 'queued', 'running')`,
    [id, resultCommit],
  );
  return rowCount === 1;
}

/** Records a failed attempt: `failed` when it was the last, else back to `queued` for the queue's retry. */
/**
 * `queueJobId`: only while that attempt holds the job, so an attempt whose job was handed back
 * meanwhile (its worker thought lost during a database outage) cannot fail the fresh one.
 */
export async function recordFailure(db: Queryable, id: string, error: string, final: boolean, queueJobId?: string): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs
        SET last_error = $2, updated_at = now(),
            status = CASE WHEN $3 THEN 'failed' ELSE 'queued' END,
            finished_at = CASE WHEN $3 THEN now() ELSE finished_at END
      WHERE id = $1 AND status = ANY($4) AND ($5::uuid IS NULL OR queue_job_id = $5::uuid)`,
    [id, storableText(error, 8000), final, QUEUED_STATUSES, queueJobId ?? null],
  );
}

/**
 * Gives a job back after a drain cut it short: queued again on a fresh queue job, and the attempt
 * it used is returned, so a shutdown never counts as a failure.
 */
export async function handBack(db: Queryable, id: string, fromQueueJobId: string, toQueueJobId: string, reason = 'handed back by a draining worker'): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE evolution_jobs
        SET status = 'queued', queue_job_id = $3, queued_at = now(), updated_at = now(), started_at = NULL,
            worker_id = NULL, worker_host = NULL, attempts = GREATEST(attempts - 1, 0),
            last_error = $4
      WHERE id = $1 AND status = 'running' AND queue_job_id = $2`,
    [id, fromQueueJobId, toQueueJobId, storableText(reason)],
  );
  return rowCount === 1;
}

/** Points a job that was never started at the fresh queue job that replaces its old one. */
export async function requeueUnstarted(db: Queryable, id: string, fromQueueJobId: string, toQueueJobId: string): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs SET queue_job_id = $3, queued_at = now(), updated_at = now()
      WHERE id = $1 AND status = 'queued' AND queue_job_id = $2`,
    [id, fromQueueJobId, toQueueJobId],
  );
}

export async function markQueued(db: Queryable, id: string, queueJobId: string): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs SET status = 'queued', queue_job_id = $2, queued_at = now(), updated_at = now() WHERE id = $1`,
    [id, queueJobId],
  );
}

export async function markFinished(db: Queryable, id: string, status: 'failed' | 'cancelled', reason: string): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs SET status = $2, last_error = $3, finished_at = now(), updated_at = now() WHERE id = $1`,
    [id, status, storableText(reason)],
  );
}

export async function countByStatus(db: Queryable, experimentId: string): Promise<Record<JobStatus, number>> {
  const { rows } = await db.query<{ status: JobStatus; count: number }>(
    `SELECT status, count(*)::int AS count FROM evolution_jobs WHERE experiment_id = $1 AND kind = 'evolution' GROUP BY status`,
    [experimentId],
  );
  const counts = Object.fromEntries(JOB_STATUSES.map((status) => [status, 0])) as Record<JobStatus, number>;
  for (const row of rows) counts[row.status] = row.count;
  return counts;
}

/** Pending jobs to dispatch, highest priority first, then oldest; locked so two schedulers never send one twice. */
export async function lockPendingForDispatch(db: Queryable, experimentId: string, limit: number): Promise<EvolutionJob[]> {
  const { rows } = await db.query<EvolutionJob>(
    `SELECT ${COLUMNS} FROM evolution_jobs
      WHERE experiment_id = $1 AND status = 'pending'
      ORDER BY priority DESC, created_at, id
      LIMIT $2
      FOR UPDATE SKIP LOCKED`,
    [experimentId, limit],
  );
  return rows;
}

export async function listByStatus(db: Queryable, experimentId: string, statuses: readonly JobStatus[], limit = 1000): Promise<EvolutionJob[]> {
  const { rows } = await db.query<EvolutionJob>(
    `SELECT ${COLUMNS} FROM evolution_jobs WHERE experiment_id = $1 AND status = ANY($2) ORDER BY created_at, id LIMIT $3`,
    [experimentId, statuses, limit],
  );
  return rows;
}

export async function listAwaitingIngestion(db: Queryable, experimentId: string, limit: number): Promise<EvolutionJob[]> {
  const { rows } = await db.query<EvolutionJob>(
    `SELECT ${COLUMNS} FROM evolution_jobs
      WHERE experiment_id = $1 AND status = 'succeeded' AND ingestion_status = 'pending'
      ORDER BY finished_at, id LIMIT $2`,
    [experimentId, limit],
  );
  return rows;
}

export interface IngestionRecord {
  readonly status: 'ingested' | 'rejected' | 'failed';
  readonly delta: number | null;
  readonly cell: unknown;
  readonly reason: string;
  /** The archive's ingestion count at this ingestion (its place in the replay order of a rebuild). */
  readonly sequence?: number;
}

export async function recordIngestion(db: Queryable, id: string, record: IngestionRecord): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs
        SET ingestion_status = $2, ingestion_delta = $3, ingestion_cell = $4, ingestion_reason = $5,
            ingested_at = now(), updated_at = now(), ingestion_seq = $7,
            payload = jsonb_set(payload, '{ingestion}', $6::jsonb, true)
      WHERE id = $1`,
    [id, record.status, record.delta, JSON.stringify(record.cell ?? null), record.reason, JSON.stringify({ map_elites: record }), record.sequence ?? null],
  );
}

/** The last errors of failed jobs on a parent commit, newest first (for prompts). */
export async function recentFailuresOnParent(db: Queryable, experimentId: string, baseCommit: string, limit: number): Promise<Array<{ id: string; lastError: string | null }>> {
  const { rows } = await db.query<{ id: string; lastError: string | null }>(
    `SELECT id, last_error AS "lastError" FROM evolution_jobs
      WHERE experiment_id = $1 AND base_commit = $2 AND status = 'failed'
      ORDER BY finished_at DESC NULLS LAST LIMIT $3`,
    [experimentId, baseCommit, limit],
  );
  return rows;
}

/** Jobs of every kind (the baseline too) that are pending, queued or running. */
export async function countUnfinished(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM evolution_jobs WHERE experiment_id = $1 AND status = ANY($2)`,
    [experimentId, UNFINISHED_STATUSES],
  );
  return rows[0].count;
}

/**
 * What the budget counts: evolution jobs in any status; the baseline is not one. Read from the
 * count triggers keep (migration 10): counting the rows scanned all of them, three times a tick.
 */
export async function countEvolutionJobs(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    'SELECT coalesce((SELECT evolution_jobs FROM experiment_job_counts WHERE experiment_id = $1), 0) AS count',
    [experimentId],
  );
  return rows[0].count;
}

export async function countAwaitingIngestion(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM evolution_jobs
      WHERE experiment_id = $1 AND status = 'succeeded' AND ingestion_status = 'pending'`,
    [experimentId],
  );
  return rows[0].count;
}

/** Unfinished jobs scheduled as seeds (`payload.seed`), which run while the archive is empty. */
export async function countUnfinishedSeeds(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM evolution_jobs
      WHERE experiment_id = $1 AND status = ANY($2) AND payload->>'seed' = 'true'`,
    [experimentId, UNFINISHED_STATUSES],
  );
  return rows[0].count;
}

export async function findJobsByKind(db: Queryable, experimentId: string, kind: string): Promise<EvolutionJob[]> {
  const { rows } = await db.query<EvolutionJob>(
    `SELECT ${COLUMNS} FROM evolution_jobs WHERE experiment_id = $1 AND kind = $2 ORDER BY created_at, id`,
    [experimentId, kind],
  );
  return rows;
}

/**
 * Locks a job for reconciliation, skipping it when a worker holds it (the worker is claiming or
 * finishing it right now, so it is not stuck).
 */
export async function lockForReconcile(db: Queryable, id: string): Promise<EvolutionJob | undefined> {
  const { rows } = await db.query<EvolutionJob>(`SELECT ${COLUMNS} FROM evolution_jobs WHERE id = $1 FOR UPDATE SKIP LOCKED`, [id]);
  return rows[0];
}

/** Queues a job again on a fresh queue job after its old one vanished, and counts the resend. */
export async function markResent(db: Queryable, id: string, queueJobId: string, reason: string): Promise<void> {
  await db.query(
    `UPDATE evolution_jobs
        SET status = 'queued', queue_job_id = $2, queued_at = now(), updated_at = now(), started_at = NULL,
            worker_id = NULL, worker_host = NULL, last_error = $3, resends = resends + 1
      WHERE id = $1`,
    [id, queueJobId, storableText(reason)],
  );
}

/**
 * Counts a failed ingestion attempt and keeps the job awaiting ingestion; returns how many attempts
 * have failed so far, so the caller can give up after a few (a transient git or network error
 * should not lose a result for good).
 */
export async function recordIngestionAttempt(db: Queryable, id: string, reason: string): Promise<number> {
  const { rows } = await db.query<{ attempts: number }>(
    `UPDATE evolution_jobs
        SET ingestion_reason = $2, updated_at = now(), ingestion_attempts = ingestion_attempts + 1
      WHERE id = $1
      RETURNING ingestion_attempts AS attempts`,
    [id, storableText(reason)],
  );
  return rows[0]?.attempts ?? 0;
}

/** Evolution jobs that ended (succeeded or failed) since `since`, newest first: what the circuit breaker reads. */
export async function recentFinishedEvolutionJobs(db: Queryable, experimentId: string, since: Date, limit: number): Promise<Array<{ status: JobStatus; lastError: string | null }>> {
  const { rows } = await db.query<{ status: JobStatus; lastError: string | null }>(
    `SELECT status, last_error AS "lastError" FROM evolution_jobs
      WHERE experiment_id = $1 AND kind = 'evolution' AND status IN ('succeeded', 'failed') AND finished_at >= $2
      ORDER BY finished_at DESC, id LIMIT $3`,
    [experimentId, since, limit],
  );
  return rows;
}

/** The database's clock: runs on several hosts compare job times against one clock. */
export async function databaseNow(db: Queryable): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now() AS now');
  return rows[0].now;
}

/**
 * Which of `ids` have finished for good (succeeded, failed or cancelled), oldest first: their job
 * branches can leave the remote (src/scheduler/job-refs.ts).
 */
export async function finishedJobIds(db: Queryable, experimentId: string, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await db.query<{ id: string }>(
    `SELECT id FROM evolution_jobs
      WHERE experiment_id = $1 AND id = ANY($2::uuid[]) AND status IN ('succeeded', 'failed', 'cancelled')
      ORDER BY finished_at NULLS FIRST, id`,
    [experimentId, ids],
  );
  return rows.map((row) => row.id);
}
