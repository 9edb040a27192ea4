import type { Migration } from './migration.ts';

export const coreMigration: Migration = {
  version: 1,
  name: 'core tables',
  sql: `
    CREATE TABLE experiments (
      id uuid PRIMARY KEY,
      raw_id text NOT NULL,
      namespace text NOT NULL,
      repository_url text,
      branch text,
      root_commit text,
      config jsonb NOT NULL DEFAULT '{}'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz
    );

    CREATE TABLE evolution_jobs (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      experiment_id uuid NOT NULL,
      kind text NOT NULL DEFAULT 'evolution',
      status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
      base_commit text NOT NULL,
      inspirations jsonb NOT NULL DEFAULT '[]'::jsonb,
      goal text,
      payload jsonb NOT NULL DEFAULT '{}'::jsonb,
      island integer NOT NULL DEFAULT 0,
      priority integer NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      queued_at timestamptz,
      started_at timestamptz,
      finished_at timestamptz,
      updated_at timestamptz NOT NULL DEFAULT now(),
      worker_id text,
      worker_host text,
      attempts integer NOT NULL DEFAULT 0,
      queue_job_id uuid,
      result_commit text,
      last_error text,
      ingestion_status text CHECK (ingestion_status IN ('pending', 'ingested', 'rejected', 'failed')),
      ingestion_delta double precision,
      ingestion_cell jsonb,
      ingestion_reason text,
      ingested_at timestamptz
    );
    CREATE INDEX evolution_jobs_unfinished ON evolution_jobs (experiment_id, status)
      WHERE status IN ('pending', 'queued', 'running');
    CREATE INDEX evolution_jobs_dispatch ON evolution_jobs (experiment_id, priority DESC, created_at)
      WHERE status = 'pending';
    CREATE INDEX evolution_jobs_ingest ON evolution_jobs (experiment_id, finished_at)
      WHERE status = 'succeeded' AND ingestion_status = 'pending';

    CREATE TABLE commit_cards (
      experiment_id uuid NOT NULL,
      commit_hash text NOT NULL,
      parent_commit text,
      job_id uuid,
      branch text,
      author text,
      message text NOT NULL DEFAULT '',
      summary text NOT NULL DEFAULT '',
      changed_files jsonb NOT NULL DEFAULT '[]'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, commit_hash)
    );

    CREATE TABLE metrics (
      experiment_id uuid NOT NULL,
      commit_hash text NOT NULL,
      name text NOT NULL,
      value double precision NOT NULL,
      unit text,
      higher_is_better boolean NOT NULL DEFAULT true,
      job_id uuid,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, commit_hash, name)
    );

    CREATE TABLE job_artifacts (
      job_id uuid NOT NULL,
      kind text NOT NULL,
      content text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (job_id, kind)
    );

    CREATE TABLE workers (
      experiment_id uuid NOT NULL,
      host text NOT NULL,
      worker_id text NOT NULL,
      role text NOT NULL,
      pid integer NOT NULL,
      state text NOT NULL,
      current_job_id uuid,
      started_at timestamptz NOT NULL DEFAULT now(),
      last_heartbeat timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, host, worker_id)
    );
  `,
};
