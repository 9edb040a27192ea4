import type { Queryable } from './pool.ts';

/**
 * SQL for what a prompt tells the model about earlier results: the evaluator's feedback on a
 * commit, the attempts already made from a parent (worse ones too), the archive's best programs
 * and where a commit sits in the archive. Output artifacts are cut in SQL (`right(content, n)`), so
 * a 64 KiB evaluator log never crosses the wire whole.
 */

export interface CommitFeedback {
  readonly commitHash: string;
  readonly jobId: string | null;
  readonly message: string;
  /** The evaluator's `summary`. */
  readonly summary: string;
  /** The end of the evaluator's output. */
  readonly outputTail: string | null;
}

export async function commitFeedback(db: Queryable, experimentId: string, commitHash: string, tailChars: number): Promise<CommitFeedback | undefined> {
  const { rows } = await db.query<CommitFeedback>(
    `SELECT c.commit_hash AS "commitHash", c.job_id AS "jobId", c.message, c.summary,
            (SELECT right(a.content, $3) FROM job_artifacts a WHERE a.job_id = c.job_id AND a.kind = 'evaluator_output') AS "outputTail"
       FROM commit_cards c WHERE c.experiment_id = $1 AND c.commit_hash = $2`,
    [experimentId, commitHash, tailChars],
  );
  return rows[0];
}

export interface Attempt {
  readonly jobId: string;
  readonly status: 'succeeded' | 'failed';
  readonly resultCommit: string | null;
  readonly lastError: string | null;
  readonly ingestionStatus: string | null;
  readonly ingestionReason: string | null;
  readonly message: string | null;
  readonly summary: string | null;
  readonly fitness: number | null;
  readonly outputTail: string | null;
}

/** Finished evolution jobs made from `baseCommit`, newest first, with their fitness and feedback. */
export async function attemptsOnParent(
  db: Queryable, experimentId: string, baseCommit: string, options: { limit: number; fitnessMetric: string; tailChars: number },
): Promise<Attempt[]> {
  const { rows } = await db.query<Attempt>(
    `SELECT j.id AS "jobId", j.status, j.result_commit AS "resultCommit", j.last_error AS "lastError",
            j.ingestion_status AS "ingestionStatus", j.ingestion_reason AS "ingestionReason",
            c.message, c.summary, m.value AS fitness,
            (SELECT right(a.content, $5) FROM job_artifacts a WHERE a.job_id = j.id AND a.kind = 'evaluator_output') AS "outputTail"
       FROM evolution_jobs j
       LEFT JOIN commit_cards c ON c.experiment_id = j.experiment_id AND c.commit_hash = j.result_commit
       LEFT JOIN metrics m ON m.experiment_id = j.experiment_id AND m.commit_hash = j.result_commit AND m.name = $4
      WHERE j.experiment_id = $1 AND j.base_commit = $2 AND j.kind = 'evolution' AND j.status IN ('succeeded', 'failed')
      ORDER BY j.finished_at DESC NULLS LAST, j.id
      LIMIT $3`,
    [experimentId, baseCommit, options.limit, options.fitnessMetric, options.tailChars],
  );
  return rows;
}

export interface TopProgram {
  readonly commitHash: string;
  readonly fitness: number;
  readonly message: string | null;
  readonly summary: string | null;
}

/** The best distinct commits of the archive over every island, best first. */
export async function topPrograms(db: Queryable, experimentId: string, limit: number, higherIsBetter: boolean): Promise<TopProgram[]> {
  const order = higherIsBetter ? 'DESC' : 'ASC';
  const { rows } = await db.query<TopProgram>(
    `SELECT e.commit_hash AS "commitHash", e.fitness, c.message, c.summary
       FROM (SELECT DISTINCT ON (commit_hash) commit_hash, fitness, placed_at FROM archive_elites
              WHERE experiment_id = $1 ORDER BY commit_hash, fitness ${order}) e
       LEFT JOIN commit_cards c ON c.experiment_id = $1 AND c.commit_hash = e.commit_hash
      ORDER BY e.fitness ${order}, e.placed_at, e.commit_hash
      LIMIT $2`,
    [experimentId, limit],
  );
  return rows;
}

export interface ArchivePlacement {
  readonly island: number;
  readonly cell: number[];
  readonly descriptor: number[];
  readonly fitness: number;
  /** Elites on the island, and how many of them are better than this one. */
  readonly islandElites: number;
  readonly better: number;
}

/** Where a commit is an elite: its cell and behaviour descriptor per island, and its rank there. */
export async function archivePlacements(db: Queryable, experimentId: string, commitHash: string, higherIsBetter: boolean): Promise<ArchivePlacement[]> {
  const better = higherIsBetter ? 'o.fitness > e.fitness' : 'o.fitness < e.fitness';
  const { rows } = await db.query<ArchivePlacement>(
    `SELECT e.island, e.cell, e.descriptor, e.fitness,
            (SELECT count(*)::int FROM archive_elites o WHERE o.experiment_id = e.experiment_id AND o.island = e.island) AS "islandElites",
            (SELECT count(*)::int FROM archive_elites o WHERE o.experiment_id = e.experiment_id AND o.island = e.island AND ${better}) AS better
       FROM archive_elites e WHERE e.experiment_id = $1 AND e.commit_hash = $2 ORDER BY e.island`,
    [experimentId, commitHash],
  );
  return rows;
}
