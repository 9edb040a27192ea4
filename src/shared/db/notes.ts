import type { Queryable } from './pool.ts';
import type { MetricValue } from './results.ts';

/** SQL for the git notes that carry ingested candidates to the remote (`refs/notes/loreley`). */

/** An ingested (or rejected) job with what its note carries: the job, its commit card and metrics. */
export interface UnnotedCandidate {
  readonly jobId: string;
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
  readonly createdAt: Date;
  readonly startedAt: Date | null;
  readonly finishedAt: Date | null;
  readonly ingestedAt: Date | null;
  readonly ingestionStatus: 'ingested' | 'rejected';
  readonly ingestionSeq: number | null;
  readonly ingestionDelta: number | null;
  readonly ingestionCell: unknown;
  readonly ingestionReason: string | null;
  readonly card: { parentCommit: string | null; branch: string | null; author: string | null; message: string; summary: string; changedFiles: string[] } | null;
  readonly metrics: MetricValue[];
}

/** Ingested jobs whose note is not on the remote yet, in ingestion order. */
export async function listUnnoted(db: Queryable, experimentId: string, limit: number): Promise<UnnotedCandidate[]> {
  const { rows } = await db.query<UnnotedCandidate>(
    `SELECT j.id AS "jobId", j.kind, j.base_commit AS "baseCommit", j.result_commit AS "resultCommit", j.inspirations, j.goal,
            j.payload - 'ingestion' AS payload, j.island, j.priority, j.attempts, j.worker_id AS "workerId", j.worker_host AS "workerHost",
            j.created_at AS "createdAt", j.started_at AS "startedAt", j.finished_at AS "finishedAt", j.ingested_at AS "ingestedAt",
            j.ingestion_status AS "ingestionStatus", j.ingestion_seq AS "ingestionSeq", j.ingestion_delta AS "ingestionDelta",
            j.ingestion_cell AS "ingestionCell", j.ingestion_reason AS "ingestionReason",
            (SELECT jsonb_build_object('parentCommit', c.parent_commit, 'branch', c.branch, 'author', c.author, 'message', c.message,
                                       'summary', c.summary, 'changedFiles', c.changed_files)
               FROM commit_cards c WHERE c.experiment_id = j.experiment_id AND c.commit_hash = COALESCE(j.result_commit, j.base_commit)) AS card,
            COALESCE((SELECT jsonb_agg(jsonb_build_object('name', m.name, 'value', m.value, 'unit', m.unit, 'higherIsBetter', m.higher_is_better) ORDER BY m.name)
               FROM metrics m WHERE m.experiment_id = j.experiment_id AND m.commit_hash = COALESCE(j.result_commit, j.base_commit)), '[]'::jsonb) AS metrics
       FROM evolution_jobs j
      WHERE j.experiment_id = $1 AND j.noted_at IS NULL AND j.ingestion_status IN ('ingested', 'rejected')
      ORDER BY j.ingestion_seq NULLS FIRST, j.ingested_at, j.id
      LIMIT $2`,
    [experimentId, limit],
  );
  return rows;
}

export async function markNoted(db: Queryable, jobIds: readonly string[]): Promise<void> {
  if (jobIds.length === 0) return;
  await db.query('UPDATE evolution_jobs SET noted_at = now() WHERE id = ANY($1::uuid[])', [jobIds]);
}

/** A behaviour model the archive applied and whose note is not on the remote yet. */
export interface UnnotedRefit {
  readonly id: string;
  readonly ingestions: number;
  readonly model: Record<string, unknown>;
  /** The commit of the ingestion it followed (null: none, e.g. a refit before any ingestion). */
  readonly commit: string | null;
}

export async function listUnnotedRefits(db: Queryable, experimentId: string, limit: number): Promise<UnnotedRefit[]> {
  const { rows } = await db.query<UnnotedRefit>(
    `SELECT r.id::text AS id, r.ingestions, r.model,
            (SELECT COALESCE(j.result_commit, j.base_commit) FROM evolution_jobs j
              WHERE j.experiment_id = r.experiment_id AND j.ingestion_seq = r.ingestions ORDER BY j.ingested_at LIMIT 1) AS commit
       FROM archive_refits r
      WHERE r.experiment_id = $1 AND r.noted_at IS NULL
      ORDER BY r.id
      LIMIT $2`,
    [experimentId, limit],
  );
  return rows;
}

/** Marks refits noted: those of `ids`, or (no ids) every one of the experiment, as after a rebuild. */
export async function markRefitsNoted(db: Queryable, experimentId: string, ids?: readonly string[]): Promise<void> {
  if (ids?.length === 0) return;
  await db.query(
    'UPDATE archive_refits SET noted_at = now() WHERE experiment_id = $1 AND noted_at IS NULL AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))',
    [experimentId, ids ?? null],
  );
}

/** The database's clock: what every host compares stored timestamps with. */
export async function databaseNow(db: Queryable): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now() AS now');
  return rows[0].now;
}
