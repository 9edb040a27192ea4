import type { ExperimentIdentity } from '../experiment.ts';
import type { Queryable } from './pool.ts';

/** SQL for the `experiments` table. */

export interface ExperimentRow {
  readonly id: string;
  readonly rawId: string;
  readonly namespace: string;
  readonly repositoryUrl: string | null;
  readonly branch: string | null;
  readonly rootCommit: string | null;
  readonly config: Record<string, unknown>;
  readonly createdAt: Date;
  readonly finishedAt: Date | null;
}

const COLUMNS = `id, raw_id AS "rawId", namespace, repository_url AS "repositoryUrl", branch, root_commit AS "rootCommit",
  config, created_at AS "createdAt", finished_at AS "finishedAt"`;

/** Creates the row on first sight; never overwrites what an earlier start recorded. */
export async function ensureExperiment(db: Queryable, experiment: ExperimentIdentity): Promise<ExperimentRow> {
  await db.query(
    `INSERT INTO experiments (id, raw_id, namespace) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`,
    [experiment.uuid, experiment.raw, experiment.namespace],
  );
  const { rows } = await db.query<ExperimentRow>(`SELECT ${COLUMNS} FROM experiments WHERE id = $1`, [experiment.uuid]);
  return rows[0];
}

export async function getExperiment(db: Queryable, id: string): Promise<ExperimentRow | undefined> {
  const { rows } = await db.query<ExperimentRow>(`SELECT ${COLUMNS} FROM experiments WHERE id = $1`, [id]);
  return rows[0];
}

/** Records the repository and root commit once; returns the row as stored. */
export async function recordExperimentRoot(db: Queryable, id: string, repositoryUrl: string, branch: string, rootCommit: string): Promise<ExperimentRow> {
  const { rows } = await db.query<ExperimentRow>(
    `UPDATE experiments
        SET repository_url = COALESCE(repository_url, $2), branch = COALESCE(branch, $3), root_commit = COALESCE(root_commit, $4)
      WHERE id = $1
      RETURNING ${COLUMNS}`,
    [id, repositoryUrl, branch, rootCommit],
  );
  return rows[0];
}

export async function markExperimentFinished(db: Queryable, id: string): Promise<void> {
  await db.query('UPDATE experiments SET finished_at = COALESCE(finished_at, now()) WHERE id = $1', [id]);
}
