import type { Migration } from './migration.ts';

/**
 * `resends` (how often reconcile sent a job again after its queue job vanished) and
 * `ingestion_attempts` (failed ingestions so far) become columns beside the job's other state;
 * they lived in `payload`. Existing counts are moved over and removed from the payload.
 */
export const jobCountersMigration: Migration = {
  version: 4,
  name: 'job counters as columns',
  sql: `
    ALTER TABLE evolution_jobs
      ADD COLUMN resends integer NOT NULL DEFAULT 0,
      ADD COLUMN ingestion_attempts integer NOT NULL DEFAULT 0;
    UPDATE evolution_jobs
       SET resends = CASE WHEN jsonb_typeof(payload->'resends') = 'number' THEN (payload->>'resends')::numeric::int ELSE 0 END,
           ingestion_attempts = CASE WHEN jsonb_typeof(payload->'ingestion_attempts') = 'number' THEN (payload->>'ingestion_attempts')::numeric::int ELSE 0 END,
           payload = payload - 'resends' - 'ingestion_attempts'
     WHERE payload ? 'resends' OR payload ? 'ingestion_attempts';
  `,
};
