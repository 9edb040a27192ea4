import type { Migration } from './migration.ts';

/**
 * The MAP-Elites archive: one elite per (island, cell), the scheduler's persistent state (sampler
 * random state, island cursor, ingestion count, the fitted PCA) and the embedding caches.
 */
export const archiveMigration: Migration = {
  version: 2,
  name: 'map-elites archive',
  sql: `
    CREATE TABLE archive_elites (
      experiment_id uuid NOT NULL,
      island integer NOT NULL,
      cell_key text NOT NULL,
      cell integer[] NOT NULL,
      descriptor double precision[] NOT NULL,
      commit_hash text NOT NULL,
      job_id uuid,
      fitness double precision NOT NULL,
      source text NOT NULL DEFAULT 'ingestion',
      placed_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, island, cell_key)
    );
    CREATE INDEX archive_elites_commit ON archive_elites (experiment_id, commit_hash);

    CREATE TABLE archive_state (
      experiment_id uuid PRIMARY KEY,
      ingestions integer NOT NULL DEFAULT 0,
      rng_state bigint NOT NULL,
      next_island integer NOT NULL DEFAULT 0,
      projection jsonb,
      projection_fitted_at integer,
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE file_embeddings (
      embedder_id text NOT NULL,
      blob_hash text NOT NULL,
      vector double precision[] NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (embedder_id, blob_hash)
    );

    CREATE TABLE commit_embeddings (
      experiment_id uuid NOT NULL,
      embedder_id text NOT NULL,
      commit_hash text NOT NULL,
      file_count integer NOT NULL,
      vector_sum double precision[] NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, embedder_id, commit_hash)
    );
  `,
};
