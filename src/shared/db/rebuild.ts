import { pgErrorCode, PG_UNDEFINED_TABLE, type Queryable } from './pool.ts';

/** SQL for `loreley rebuild`: what the database holds of an experiment, restoring it, wiping it. */

export interface ExperimentFootprint {
  readonly jobs: number;
  readonly elites: number;
  readonly rootCommit: string | null;
}

export async function experimentFootprint(db: Queryable, experimentId: string): Promise<ExperimentFootprint> {
  const { rows } = await db.query<ExperimentFootprint>(
    `SELECT (SELECT count(*)::int FROM evolution_jobs WHERE experiment_id = $1) AS jobs,
            (SELECT count(*)::int FROM archive_elites WHERE experiment_id = $1) AS elites,
            (SELECT root_commit FROM experiments WHERE id = $1) AS "rootCommit"`,
    [experimentId],
  );
  return rows[0];
}

/** Removes every row of the experiment (its queue jobs too), keeping other experiments'. */
export async function wipeExperiment(db: Queryable, experimentId: string, bossSchema: string, queueName: string): Promise<void> {
  await db.query('DELETE FROM job_artifacts WHERE job_id IN (SELECT id FROM evolution_jobs WHERE experiment_id = $1)', [experimentId]);
  for (const table of ['evolution_jobs', 'commit_cards', 'metrics', 'workers', 'archive_elites', 'archive_state', 'archive_refits', 'commit_embeddings', 'model_calls']) {
    await db.query(`DELETE FROM ${table} WHERE experiment_id = $1`, [experimentId]);
  }
  await db.query('DELETE FROM experiments WHERE id = $1', [experimentId]);
  try {
    await db.query('SAVEPOINT queue_wipe');
    await db.query(`DELETE FROM "${bossSchema}".job WHERE name = $1`, [queueName]);
    await db.query('RELEASE SAVEPOINT queue_wipe');
  } catch (error) {
    // No queue schema (it was lost too): nothing to remove.
    if (pgErrorCode(error) !== PG_UNDEFINED_TABLE) throw error;
    await db.query('ROLLBACK TO SAVEPOINT queue_wipe');
  }
}

export interface RestoredJob {
  readonly id: string;
  readonly kind: string;
  readonly baseCommit: string;
  readonly resultCommit: string | null;
  readonly inspirations: string[];
  readonly goal: string | null;
  readonly payload: Record<string, unknown>;
  readonly island: number;
  readonly priority: number;
  readonly attempts: number;
  readonly workerId: string | null;
  readonly workerHost: string | null;
  readonly createdAt: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
}

export interface RestoredCard {
  readonly commitHash: string;
  readonly parentCommit: string | null;
  readonly jobId: string;
  readonly branch: string | null;
  readonly author: string | null;
  readonly message: string;
  readonly summary: string;
  readonly changedFiles: string[];
}

export interface RestoredMetric {
  readonly commitHash: string;
  readonly jobId: string;
  readonly name: string;
  readonly value: number;
  readonly unit: string | null;
  readonly higherIsBetter: boolean;
}

/**
 * Inserts succeeded jobs awaiting ingestion, their commit cards and metrics, three statements in
 * all. Marked noted: their notes are where they came from.
 */
export async function restoreCandidates(db: Queryable, experimentId: string, jobs: readonly RestoredJob[], cards: readonly RestoredCard[], metrics: readonly RestoredMetric[]): Promise<void> {
  await db.query(
    `INSERT INTO evolution_jobs (id, experiment_id, kind, status, base_commit, result_commit, inspirations, goal, payload, island, priority,
                                 attempts, worker_id, worker_host, created_at, started_at, finished_at, updated_at, ingestion_status, noted_at)
     SELECT j.id, $1, j.kind, 'succeeded', j.base_commit, j.result_commit, COALESCE(j.inspirations, '[]'::jsonb), j.goal, COALESCE(j.payload, '{}'::jsonb),
            j.island, j.priority, j.attempts, j.worker_id, j.worker_host, j.created_at, j.started_at, COALESCE(j.finished_at, j.created_at), now(), 'pending', now()
       FROM jsonb_to_recordset($2::jsonb) AS j(id uuid, kind text, base_commit text, result_commit text, inspirations jsonb, goal text, payload jsonb,
                                               island int, priority int, attempts int, worker_id text, worker_host text,
                                               created_at timestamptz, started_at timestamptz, finished_at timestamptz)`,
    [experimentId, JSON.stringify(jobs.map((j) => ({
      id: j.id, kind: j.kind, base_commit: j.baseCommit, result_commit: j.resultCommit, inspirations: j.inspirations, goal: j.goal, payload: j.payload,
      island: j.island, priority: j.priority, attempts: j.attempts, worker_id: j.workerId, worker_host: j.workerHost,
      created_at: j.createdAt, started_at: j.startedAt, finished_at: j.finishedAt,
    })))],
  );
  await db.query(
    `INSERT INTO commit_cards (experiment_id, commit_hash, parent_commit, job_id, branch, author, message, summary, changed_files)
     SELECT $1, c.commit_hash, c.parent_commit, c.job_id, c.branch, c.author, COALESCE(c.message, ''), COALESCE(c.summary, ''), COALESCE(c.changed_files, '[]'::jsonb)
       FROM jsonb_to_recordset($2::jsonb) AS c(commit_hash text, parent_commit text, job_id uuid, branch text, author text, message text, summary text, changed_files jsonb)
     ON CONFLICT (experiment_id, commit_hash) DO NOTHING`,
    [experimentId, JSON.stringify(cards.map((c) => ({
      commit_hash: c.commitHash, parent_commit: c.parentCommit, job_id: c.jobId, branch: c.branch, author: c.author, message: c.message, summary: c.summary, changed_files: c.changedFiles,
    })))],
  );
  await db.query(
    `INSERT INTO metrics (experiment_id, commit_hash, job_id, name, value, unit, higher_is_better)
     SELECT $1, m.commit_hash, m.job_id, m.name, m.value, m.unit, COALESCE(m.higher_is_better, true)
       FROM jsonb_to_recordset($2::jsonb) AS m(commit_hash text, job_id uuid, name text, value double precision, unit text, higher_is_better boolean)
     ON CONFLICT (experiment_id, commit_hash, name) DO NOTHING`,
    [experimentId, JSON.stringify(metrics.map((m) => ({ commit_hash: m.commitHash, job_id: m.jobId, name: m.name, value: m.value, unit: m.unit, higher_is_better: m.higherIsBetter })))],
  );
}
