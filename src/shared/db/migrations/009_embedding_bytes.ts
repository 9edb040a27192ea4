import type { Migration } from './migration.ts';

/**
 * - `file_embeddings.vector` becomes float32 bytes (see src/shared/db/embeddings.ts). The table is
 *   a cache, emptied here: vectors are recomputed from the blobs as commits are next embedded.
 * - `archive_refits`: every behaviour model (the PCA projection, with the CVT centroids) the
 *   archive applied, and after how many ingestions (`archive_state.ingestions` then), filled by a
 *   trigger whenever `archive_state.projection` changes, whoever writes it. The notes carry each
 *   one to the remote, so `loreley rebuild` re-applies the same models at the same points of its
 *   replay and the archive's cells come out the same; `noted_at` is set once its note is pushed.
 */
export const embeddingBytesMigration: Migration = {
  version: 9,
  name: 'float32 file vectors, refit history',
  sql: `
    TRUNCATE file_embeddings;
    ALTER TABLE file_embeddings DROP COLUMN vector, ADD COLUMN vector bytea NOT NULL;

    CREATE TABLE archive_refits (
      id bigserial PRIMARY KEY,
      experiment_id uuid NOT NULL,
      ingestions integer NOT NULL,
      model jsonb NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(),
      noted_at timestamptz
    );
    CREATE INDEX archive_refits_unnoted ON archive_refits (experiment_id, id) WHERE noted_at IS NULL;
    CREATE FUNCTION archive_projection_applied() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
      INSERT INTO archive_refits (experiment_id, ingestions, model) VALUES (NEW.experiment_id, NEW.ingestions, NEW.projection);
      RETURN NULL;
    END $$;
    CREATE TRIGGER archive_projection_applied AFTER UPDATE OF projection ON archive_state
      FOR EACH ROW WHEN (NEW.projection IS NOT NULL AND NEW.projection IS DISTINCT FROM OLD.projection)
      EXECUTE FUNCTION archive_projection_applied();
  `,
};
