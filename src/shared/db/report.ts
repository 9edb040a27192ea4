import type { Queryable } from './pool.ts';

/** Read-only queries for `loreley report`: whole-experiment reads, each one statement. */

export interface ReportJob {
  readonly id: string;
  readonly kind: string;
  readonly status: string;
  readonly baseCommit: string;
  readonly resultCommit: string | null;
  readonly createdAt: Date;
  readonly startedAt: Date | null;
  readonly finishedAt: Date | null;
  readonly workerId: string | null;
  readonly lastError: string | null;
  readonly island: number;
  readonly ingestionStatus: string | null;
}

export async function reportJobs(db: Queryable, experimentId: string): Promise<ReportJob[]> {
  const { rows } = await db.query<ReportJob>(
    `SELECT id, kind, status, base_commit AS "baseCommit", result_commit AS "resultCommit", created_at AS "createdAt",
            started_at AS "startedAt", finished_at AS "finishedAt", worker_id AS "workerId", last_error AS "lastError",
            island, ingestion_status AS "ingestionStatus"
       FROM evolution_jobs WHERE experiment_id = $1 ORDER BY coalesce(finished_at, created_at), id`,
    [experimentId],
  );
  return rows;
}

export interface ReportMetric {
  readonly commitHash: string;
  readonly name: string;
  readonly value: number;
  readonly jobId: string | null;
  readonly createdAt: Date;
}

/** Every metric of every commit, oldest first. */
export async function reportMetrics(db: Queryable, experimentId: string): Promise<ReportMetric[]> {
  const { rows } = await db.query<ReportMetric>(
    `SELECT commit_hash AS "commitHash", name, value, job_id AS "jobId", created_at AS "createdAt"
       FROM metrics WHERE experiment_id = $1 ORDER BY created_at, commit_hash, name`,
    [experimentId],
  );
  return rows;
}

export interface ReportCommit {
  readonly commitHash: string;
  readonly parentCommit: string | null;
  readonly jobId: string | null;
  readonly message: string;
  readonly summary: string;
  readonly changedFiles: string[];
  readonly createdAt: Date;
}

export async function reportCommits(db: Queryable, experimentId: string): Promise<ReportCommit[]> {
  const { rows } = await db.query<ReportCommit>(
    `SELECT commit_hash AS "commitHash", parent_commit AS "parentCommit", job_id AS "jobId", message, summary,
            changed_files AS "changedFiles", created_at AS "createdAt"
       FROM commit_cards WHERE experiment_id = $1`,
    [experimentId],
  );
  return rows;
}

export interface ReportModelCall {
  readonly createdAt: Date;
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly costUsd: number;
  readonly ok: boolean;
}

export async function reportModelCalls(db: Queryable, experimentId: string): Promise<ReportModelCall[]> {
  const { rows } = await db.query<ReportModelCall>(
    `SELECT created_at AS "createdAt", model, prompt_tokens AS "promptTokens", completion_tokens AS "completionTokens",
            cost_usd AS "costUsd", ok
       FROM model_calls WHERE experiment_id = $1 ORDER BY created_at, id`,
    [experimentId],
  );
  return rows;
}
