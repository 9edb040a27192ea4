import type { Migration } from './migration.ts';

/**
 * `archive_refits` records every write of `archive_state.projection`, also one that stores the
 * model already there: applying a model re-places every elite (their placement time, which breaks
 * ties for the best commit, changes), so a replay must apply it too. Migration 9 skipped those.
 */
export const refitEveryApplyMigration: Migration = {
  version: 11,
  name: 'a refit record for every applied model',
  sql: `
    DROP TRIGGER archive_projection_applied ON archive_state;
    CREATE TRIGGER archive_projection_applied AFTER UPDATE OF projection ON archive_state
      FOR EACH ROW WHEN (NEW.projection IS NOT NULL)
      EXECUTE FUNCTION archive_projection_applied();
  `,
};
