import { storableOrNull, storableText } from '../storable.ts';
import type { Queryable } from './pool.ts';

/** SQL for what a job leaves behind: `commit_cards`, `metrics` and `job_artifacts`. */

export interface MetricValue {
  readonly name: string;
  readonly value: number;
  readonly unit?: string | null;
  readonly higherIsBetter?: boolean;
}

export interface CommitCard {
  readonly experimentId: string;
  readonly commitHash: string;
  readonly parentCommit: string | null;
  readonly jobId: string | null;
  readonly branch: string | null;
  readonly author: string | null;
  readonly message: string;
  readonly summary: string;
  readonly changedFiles: readonly string[];
}

/** Idempotent: a retried job that lands on the same commit updates the card. */
export async function upsertCommitCard(db: Queryable, card: CommitCard): Promise<void> {
  await db.query(
    `INSERT INTO commit_cards (experiment_id, commit_hash, parent_commit, job_id, branch, author, message, summary, changed_files)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (experiment_id, commit_hash) DO UPDATE
       SET parent_commit = EXCLUDED.parent_commit, job_id = EXCLUDED.job_id, branch = EXCLUDED.branch,
           author = EXCLUDED.author, message = EXCLUDED.message, summary = EXCLUDED.summary,
           changed_files = EXCLUDED.changed_files`,
    [card.experimentId, card.commitHash, card.parentCommit, card.jobId, storableOrNull(card.branch), storableOrNull(card.author), storableText(card.message), storableText(card.summary), JSON.stringify(card.changedFiles.map((file) => storableText(file)))],
  );
}

export async function getCommitCard(db: Queryable, experimentId: string, commitHash: string): Promise<CommitCard | undefined> {
  const { rows } = await db.query<CommitCard>(
    `SELECT experiment_id AS "experimentId", commit_hash AS "commitHash", parent_commit AS "parentCommit", job_id AS "jobId",
            branch, author, message, summary, changed_files AS "changedFiles"
       FROM commit_cards WHERE experiment_id = $1 AND commit_hash = $2`,
    [experimentId, commitHash],
  );
  return rows[0];
}

export async function upsertMetrics(db: Queryable, experimentId: string, commitHash: string, jobId: string | null, metrics: readonly MetricValue[]): Promise<void> {
  if (metrics.length === 0) return;
  await db.query(
    `INSERT INTO metrics (experiment_id, commit_hash, job_id, name, value, unit, higher_is_better)
     SELECT $1, $2, $3, m.name, m.value, m.unit, m.higher_is_better
       FROM jsonb_to_recordset($4::jsonb) AS m(name text, value double precision, unit text, higher_is_better boolean)
     ON CONFLICT (experiment_id, commit_hash, name) DO UPDATE
       SET value = EXCLUDED.value, unit = EXCLUDED.unit, higher_is_better = EXCLUDED.higher_is_better, job_id = EXCLUDED.job_id`,
    [experimentId, commitHash, jobId, JSON.stringify(metrics.map((m) => ({ name: storableText(m.name), value: m.value, unit: storableOrNull(m.unit), higher_is_better: m.higherIsBetter ?? true })))],
  );
}

export async function getMetrics(db: Queryable, experimentId: string, commitHash: string): Promise<MetricValue[]> {
  const { rows } = await db.query<MetricValue>(
    `SELECT name, value, unit, higher_is_better AS "higherIsBetter" FROM metrics
      WHERE experiment_id = $1 AND commit_hash = $2 ORDER BY name`,
    [experimentId, commitHash],
  );
  return rows;
}

export async function putArtifact(db: Queryable, jobId: string, kind: string, content: string): Promise<void> {
  await db.query(
    `INSERT INTO job_artifacts (job_id, kind, content) VALUES ($1, $2, $3)
     ON CONFLICT (job_id, kind) DO UPDATE SET content = EXCLUDED.content, created_at = now()`,
    [jobId, storableText(kind), storableText(content)],
  );
}

export async function getArtifacts(db: Queryable, jobId: string): Promise<Record<string, string>> {
  const { rows } = await db.query<{ kind: string; content: string }>('SELECT kind, content FROM job_artifacts WHERE job_id = $1', [jobId]);
  return Object.fromEntries(rows.map((row) => [row.kind, row.content]));
}
