import type { Migration } from './migration.ts';

/**
 * `archive_versions.version` changes with every statement that writes an experiment's
 * `archive_elites`, whoever runs it (the scheduler, `loreley rebuild`, a standby that took over, a
 * fix by hand): the scheduler keeps the elites in memory and re-reads them only when the version
 * it holds is no longer the stored one. Values come from one sequence, so a version never repeats.
 * Statement-level triggers: a refit rewriting 10,000 elites bumps the version once, not 10,000
 * times. A table of its own, not a column of `archive_state`: a refit's write holds this row
 * while the scheduler's tick goes on locking and updating the sampler's state row.
 */
export const archiveVersionMigration: Migration = {
  version: 8,
  name: 'archive version for the in-memory elites',
  sql: `
    CREATE SEQUENCE archive_version_seq;
    CREATE TABLE archive_versions (
      experiment_id uuid PRIMARY KEY,
      version bigint NOT NULL DEFAULT nextval('archive_version_seq')
    );
    CREATE FUNCTION archive_elites_changed() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
      INSERT INTO archive_versions (experiment_id) SELECT DISTINCT experiment_id FROM changed
        ON CONFLICT (experiment_id) DO UPDATE SET version = nextval('archive_version_seq');
      RETURN NULL;
    END $$;
    CREATE TRIGGER archive_elites_inserted AFTER INSERT ON archive_elites
      REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION archive_elites_changed();
    CREATE TRIGGER archive_elites_updated AFTER UPDATE ON archive_elites
      REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION archive_elites_changed();
    CREATE TRIGGER archive_elites_deleted AFTER DELETE ON archive_elites
      REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION archive_elites_changed();
  `,
};
