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

// Each upsert's conflict clause, shared by its own statement and by `recordSucceededAttempt`.
const CARD_COLUMNS = 'experiment_id, commit_hash, parent_commit, job_id, branch, author, message, summary, changed_files';
const CARD_CONFLICT = `ON CONFLICT (experiment_id, commit_hash) DO UPDATE
       SET parent_commit = EXCLUDED.parent_commit, job_id = EXCLUDED.job_id, branch = EXCLUDED.branch,
           author = EXCLUDED.author, message = EXCLUDED.message, summary = EXCLUDED.summary,
           changed_files = EXCLUDED.changed_files`;
const METRIC_COLUMNS = 'experiment_id, commit_hash, job_id, name, value, unit, higher_is_better';
const METRICS_RECORDSET = 'jsonb_to_recordset($M::jsonb) AS m(name text, value double precision, unit text, higher_is_better boolean)';
const METRIC_CONFLICT = `ON CONFLICT (experiment_id, commit_hash, name) DO UPDATE
       SET value = EXCLUDED.value, unit = EXCLUDED.unit, higher_is_better = EXCLUDED.higher_is_better, job_id = EXCLUDED.job_id`;
const ARTIFACT_CONFLICT = 'ON CONFLICT (job_id, kind) DO UPDATE SET content = EXCLUDED.content, created_at = now()';

/** The card's values as stored: no NUL, no secret. */
function cardValues(card: CommitCard): unknown[] {
  return [card.experimentId, card.commitHash, card.parentCommit, card.jobId, storableOrNull(card.branch), storableOrNull(card.author), storableText(card.message), storableText(card.summary), JSON.stringify(card.changedFiles.map((file) => storableText(file)))];
}

function metricsJson(metrics: readonly MetricValue[]): string {
  return JSON.stringify(metrics.map((m) => ({ name: storableText(m.name), value: m.value, unit: storableOrNull(m.unit), higher_is_better: m.higherIsBetter ?? true })));
}

/** Idempotent: a retried job that lands on the same commit updates the card. */
export async function upsertCommitCard(db: Queryable, card: CommitCard): Promise<void> {
  await db.query(`INSERT INTO commit_cards (${CARD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ${CARD_CONFLICT}`, cardValues(card));
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
    `INSERT INTO metrics (${METRIC_COLUMNS})
     SELECT $1, $2, $3, m.name, m.value, m.unit, m.higher_is_better FROM ${METRICS_RECORDSET.replace('$M', '$4')}
     ${METRIC_CONFLICT}`,
    [experimentId, commitHash, jobId, metricsJson(metrics)],
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
  await db.query(`INSERT INTO job_artifacts (job_id, kind, content) VALUES ($1, $2, $3) ${ARTIFACT_CONFLICT}`, [jobId, storableText(kind), storableText(content)]);
}

/**
 * A job attempt's result in one statement: the row marked succeeded (only while the attempt on
 * `queueJobId` still holds it: running on that queue job), and with it, only then, the commit
 * card, the metrics and the artifacts. False when the attempt no longer holds the job: then
 * nothing is written. One round trip where one statement per table took six, on every job.
 */
export async function recordSucceededAttempt(
  db: Queryable,
  result: { readonly queueJobId: string; readonly card: CommitCard & { readonly jobId: string }; readonly metrics: readonly MetricValue[]; readonly artifacts: Readonly<Record<string, string>> },
): Promise<boolean> {
  const { card } = result;
  const kinds = Object.keys(result.artifacts);
  const { rows } = await db.query<{ marked: number }>(
    `WITH marked AS (
       UPDATE evolution_jobs
          SET status = 'succeeded', result_commit = $2, finished_at = now(), updated_at = now(),
              last_error = NULL, ingestion_status = 'pending'
        WHERE id = $4::uuid AND status = 'running' AND queue_job_id = $10::uuid
       RETURNING id
     ), card AS (
       INSERT INTO commit_cards (${CARD_COLUMNS})
       SELECT $1::uuid, $2::text, $3::text, $4::uuid, $5::text, $6::text, $7::text, $8::text, $9::jsonb FROM marked
       ${CARD_CONFLICT}
     ), metric_rows AS (
       INSERT INTO metrics (${METRIC_COLUMNS})
       SELECT $1::uuid, $2::text, $4::uuid, m.name, m.value, m.unit, m.higher_is_better FROM marked, ${METRICS_RECORDSET.replace('$M', '$11')}
       ${METRIC_CONFLICT}
     ), artifact_rows AS (
       INSERT INTO job_artifacts (job_id, kind, content)
       SELECT $4::uuid, a.kind, a.content FROM marked, unnest($12::text[], $13::text[]) AS a(kind, content)
       ${ARTIFACT_CONFLICT}
     )
     SELECT count(*)::int AS marked FROM marked`,
    [...cardValues(card), result.queueJobId, metricsJson(result.metrics), kinds.map((kind) => storableText(kind)), kinds.map((kind) => storableText(result.artifacts[kind]))],
  );
  return rows[0].marked === 1;
}

export async function getArtifacts(db: Queryable, jobId: string): Promise<Record<string, string>> {
  const { rows } = await db.query<{ kind: string; content: string }>('SELECT kind, content FROM job_artifacts WHERE job_id = $1', [jobId]);
  return Object.fromEntries(rows.map((row) => [row.kind, row.content]));
}
