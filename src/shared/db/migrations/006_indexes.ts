import type { Migration } from './migration.ts';

/**
 * Indexes for what the scheduler, the worker's prompt and `loreley status` ask on every tick or
 * job, found as sequential scans with EXPLAIN ANALYZE at 50,000 job rows and 10,000 elites
 * (`npm run bench -- --only archive`):
 * - the job budget and status counts (`countEvolutionJobs`, `countByStatus`): by kind and status,
 *   answered from the index alone;
 * - the failures on a parent shown in each prompt (`recentFailuresOnParent`);
 * - the best elite and each island's best (`bestElite`, `topElites` for migration): by fitness,
 *   so the top rows are read in order instead of sorting the whole archive.
 * (Version 5 is taken by the git-notes work.)
 */
export const indexesMigration: Migration = {
  version: 6,
  name: 'indexes for counts, parent failures and best elites',
  sql: `
    CREATE INDEX IF NOT EXISTS evolution_jobs_kind_status ON evolution_jobs (experiment_id, kind, status);
    CREATE INDEX IF NOT EXISTS evolution_jobs_failed_parent ON evolution_jobs (experiment_id, base_commit, finished_at DESC)
      WHERE status = 'failed';
    CREATE INDEX IF NOT EXISTS archive_elites_fitness ON archive_elites (experiment_id, fitness);
    CREATE INDEX IF NOT EXISTS archive_elites_island_fitness ON archive_elites (experiment_id, island, fitness);
  `,
};
