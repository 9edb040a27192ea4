import type { Migration } from './migration.ts';

/**
 * `experiment_job_counts.evolution_jobs`: how many evolution jobs an experiment has (the job
 * budget's count), kept by statement-level triggers on every insert into and delete from
 * `evolution_jobs`, whoever runs it. Counting them took an index scan over every job row, three
 * times a scheduler tick (8–30 ms each at 50,000 rows, `npm run bench -- --only archive`). A job's
 * kind is never changed once inserted, so updates need no trigger. Only the scheduler (and a
 * rebuild's restore) insert jobs, so the counter row is no point of contention for the workers.
 */
export const jobCountMigration: Migration = {
  version: 10,
  name: 'evolution job count per experiment',
  sql: `
    CREATE TABLE experiment_job_counts (
      experiment_id uuid PRIMARY KEY,
      evolution_jobs integer NOT NULL DEFAULT 0
    );
    INSERT INTO experiment_job_counts (experiment_id, evolution_jobs)
      SELECT experiment_id, count(*) FROM evolution_jobs WHERE kind = 'evolution' GROUP BY experiment_id;
    CREATE FUNCTION evolution_jobs_counted() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO experiment_job_counts AS c (experiment_id, evolution_jobs)
          SELECT experiment_id, count(*) FROM changed WHERE kind = 'evolution' GROUP BY experiment_id
          ON CONFLICT (experiment_id) DO UPDATE SET evolution_jobs = c.evolution_jobs + EXCLUDED.evolution_jobs;
      ELSE
        UPDATE experiment_job_counts AS c SET evolution_jobs = c.evolution_jobs - d.n
          FROM (SELECT experiment_id, count(*) AS n FROM changed WHERE kind = 'evolution' GROUP BY experiment_id) AS d
         WHERE c.experiment_id = d.experiment_id;
      END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER evolution_jobs_inserted AFTER INSERT ON evolution_jobs
      REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION evolution_jobs_counted();
    CREATE TRIGGER evolution_jobs_deleted AFTER DELETE ON evolution_jobs
      REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION evolution_jobs_counted();
  `,
};
