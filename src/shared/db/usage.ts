import { COMPLETED_STATUSES, UNFINISHED_STATUSES } from './jobs.ts';
import type { Queryable } from './pool.ts';

/** SQL for `model_calls`: what every model call used and cost. */

export interface ModelCall {
  readonly experimentId: string;
  /** Null for calls made outside a job (the scheduler's embeddings). */
  readonly jobId: string | null;
  /** `plan`, `code`, `embedding`. */
  readonly purpose: string;
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly latencyMs: number;
  readonly costUsd: number;
  readonly ok: boolean;
  readonly error?: string | null;
}

export async function recordModelCall(db: Queryable, call: ModelCall): Promise<void> {
  await db.query(
    `INSERT INTO model_calls (experiment_id, job_id, purpose, model, prompt_tokens, completion_tokens, latency_ms, cost_usd, ok, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [
      call.experimentId, call.jobId, call.purpose, call.model, Math.round(call.promptTokens), Math.round(call.completionTokens),
      Math.round(call.latencyMs), call.costUsd, call.ok, call.error ? call.error.slice(0, 2000) : null,
    ],
  );
}

export interface UsageLine {
  readonly calls: number;
  readonly failedCalls: number;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly costUsd: number;
}

export interface UsageTotals extends UsageLine {
  readonly byModel: ReadonlyArray<UsageLine & { readonly model: string }>;
}

/** The experiment's totals and a line per model (most expensive first), for `loreley status`. */
export async function usageTotals(db: Queryable, experimentId: string): Promise<UsageTotals> {
  const { rows } = await db.query<UsageLine & { model: string }>(
    `SELECT model, count(*)::int AS calls, count(*) FILTER (WHERE NOT ok)::int AS "failedCalls",
            coalesce(sum(prompt_tokens), 0)::bigint AS "promptTokens",
            coalesce(sum(completion_tokens), 0)::bigint AS "completionTokens",
            coalesce(sum(cost_usd), 0)::float8 AS "costUsd"
       FROM model_calls WHERE experiment_id = $1
      GROUP BY model ORDER BY "costUsd" DESC, model`,
    [experimentId],
  );
  const sum = (key: keyof UsageLine): number => rows.reduce((total, row) => total + Number(row[key]), 0);
  return {
    calls: sum('calls'),
    failedCalls: sum('failedCalls'),
    promptTokens: sum('promptTokens'),
    completionTokens: sum('completionTokens'),
    costUsd: sum('costUsd'),
    byModel: rows,
  };
}

/** USD spent by the experiment's model calls so far. */
export async function spentUsd(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ spent: number }>(
    'SELECT coalesce(sum(cost_usd), 0)::float8 AS spent FROM model_calls WHERE experiment_id = $1',
    [experimentId],
  );
  return rows[0].spent;
}

export async function jobUsage(db: Queryable, jobId: string): Promise<UsageLine> {
  const { rows } = await db.query<UsageLine>(
    `SELECT count(*)::int AS calls, count(*) FILTER (WHERE NOT ok)::int AS "failedCalls",
            coalesce(sum(prompt_tokens), 0)::bigint AS "promptTokens",
            coalesce(sum(completion_tokens), 0)::bigint AS "completionTokens",
            coalesce(sum(cost_usd), 0)::float8 AS "costUsd"
       FROM model_calls WHERE job_id = $1`,
    [jobId],
  );
  return rows[0];
}

export interface CostBudgetSnapshot {
  readonly spentUsd: number;
  /** Evolution jobs that succeeded or failed. */
  readonly finishedJobs: number;
  /** Evolution jobs pending, queued or running. */
  readonly inFlightJobs: number;
}

/** What `costBudgetExhausted` needs, read in one statement. */
export async function costBudgetSnapshot(db: Queryable, experimentId: string): Promise<CostBudgetSnapshot> {
  const { rows } = await db.query<CostBudgetSnapshot>(
    `SELECT (SELECT coalesce(sum(cost_usd), 0)::float8 FROM model_calls WHERE experiment_id = $1) AS "spentUsd",
            (SELECT count(*)::int FROM evolution_jobs
              WHERE experiment_id = $1 AND kind = 'evolution' AND status = ANY($2)) AS "finishedJobs",
            (SELECT count(*)::int FROM evolution_jobs
              WHERE experiment_id = $1 AND kind = 'evolution' AND status = ANY($3)) AS "inFlightJobs"`,
    [experimentId, COMPLETED_STATUSES, UNFINISHED_STATUSES],
  );
  return rows[0];
}
