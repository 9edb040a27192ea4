import type { Migration } from './migration.ts';

/**
 * Git notes (`refs/notes/loreley`) carry each ingested candidate to the remote. `ingestion_seq` is
 * the archive's ingestion count at the job's ingestion, so a rebuild replays ingestions in their
 * original order; `noted_at` is set once the job's note has been pushed (or written, without push),
 * so a scheduler that dies between ingestion and push leaves the note to its successor.
 */
export const notesMigration: Migration = {
  version: 7,
  name: 'ingestion order and git notes',
  sql: `
    ALTER TABLE evolution_jobs
      ADD COLUMN ingestion_seq integer,
      ADD COLUMN noted_at timestamptz;
    CREATE INDEX evolution_jobs_unnoted ON evolution_jobs (experiment_id, ingestion_seq)
      WHERE noted_at IS NULL AND ingestion_status IN ('ingested', 'rejected');
  `,
};
