import type { Queryable } from './pool.ts';

/** Read-only summaries for `loreley status`. */

export interface BestCommit {
  readonly commitHash: string;
  readonly value: number;
  readonly jobId: string | null;
}

/** The best value of one metric over the experiment's commits. */
export async function bestByMetric(db: Queryable, experimentId: string, metric: string, higherIsBetter: boolean): Promise<BestCommit | undefined> {
  const { rows } = await db.query<BestCommit>(
    `SELECT commit_hash AS "commitHash", value, job_id AS "jobId" FROM metrics
      WHERE experiment_id = $1 AND name = $2
      ORDER BY value ${higherIsBetter ? 'DESC' : 'ASC'}, created_at LIMIT 1`,
    [experimentId, metric],
  );
  return rows[0];
}

export async function jobCounts(db: Queryable, experimentId: string): Promise<{ total: number; baseline: number; lastFinishedAt: Date | null }> {
  const { rows } = await db.query<{ total: number; baseline: number; lastFinishedAt: Date | null }>(
    `SELECT count(*) FILTER (WHERE kind = 'evolution')::int AS total, count(*) FILTER (WHERE kind <> 'evolution')::int AS baseline,
            max(finished_at) AS "lastFinishedAt"
       FROM evolution_jobs WHERE experiment_id = $1`,
    [experimentId],
  );
  return rows[0];
}
