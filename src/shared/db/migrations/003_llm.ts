import type { Migration } from './migration.ts';

/** One row per model call (chat or embeddings), for token and cost accounting and the cost budget. */
export const llmMigration: Migration = {
  version: 3,
  name: 'model call usage',
  sql: `
    CREATE TABLE model_calls (
      id bigserial PRIMARY KEY,
      experiment_id uuid NOT NULL,
      job_id uuid,
      purpose text NOT NULL,
      model text NOT NULL,
      prompt_tokens integer NOT NULL DEFAULT 0,
      completion_tokens integer NOT NULL DEFAULT 0,
      latency_ms integer NOT NULL,
      cost_usd double precision NOT NULL DEFAULT 0,
      ok boolean NOT NULL,
      error text,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX model_calls_experiment ON model_calls (experiment_id, model);
    CREATE INDEX model_calls_job ON model_calls (job_id) WHERE job_id IS NOT NULL;
  `,
};
