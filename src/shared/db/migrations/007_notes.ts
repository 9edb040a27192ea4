import type { Migration } from './migration.ts';

/**
 * Git notes (`refs/notes/loreley`) carry each ingested candidate to the remote. `ingestion_seq` is
 * the archive's ingestion count at the job's ingestion, so a rebuild replays ingestions in their
 * original order; `noted_at` is set once the job's note has been pushed (or written, without push),
 * so a scheduler that dies between ingestion and push leaves the note to its successor.
 */
/**
 * `hosts`: one row per supervisor, keyed by its host id (LORELEY_HOST_ID): which machine and pid
 * hold it, and since when (the database's clock, so hosts with skewed clocks agree). A second live
 * supervisor with the same host id is refused, so a slot id is unique per host.
 */
export const notesMigration: Migration = {
  version: 7,
  name: 'ingestion order, git notes, hosts',
  sql: `
    ALTER TABLE evolution_jobs
      ADD COLUMN ingestion_seq integer,
      ADD COLUMN noted_at timestamptz;
    CREATE INDEX evolution_jobs_unnoted ON evolution_jobs (experiment_id, ingestion_seq)
      WHERE noted_at IS NULL AND ingestion_status IN ('ingested', 'rejected');

    CREATE TABLE hosts (
      experiment_id uuid NOT NULL,
      host text NOT NULL,
      machine text NOT NULL,
      pid integer NOT NULL,
      state text NOT NULL,
      workers integer NOT NULL DEFAULT 0,
      scheduler boolean NOT NULL DEFAULT false,
      started_at timestamptz NOT NULL DEFAULT now(),
      last_heartbeat timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (experiment_id, host)
    );
  `,
};
