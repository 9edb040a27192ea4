import type { Queryable } from './pool.ts';

/** SQL for the `workers` table: who is running, where, and on what. */

export interface WorkerPresence {
  readonly experimentId: string;
  readonly host: string;
  readonly workerId: string;
  readonly role: string;
  readonly pid: number;
  readonly state: string;
  readonly currentJobId: string | null;
}

/**
 * The presence upsert over `source`, a SELECT or VALUES giving (experiment_id, host, worker_id,
 * role, pid, state, current_job_id, last_heartbeat): one text for the plain write and for a
 * statement that records presence along with its own work (the worker's claim).
 */
export function presenceUpsertSql(source: string): string {
  return `INSERT INTO workers (experiment_id, host, worker_id, role, pid, state, current_job_id, last_heartbeat, started_at)
     SELECT s.*, now() FROM (${source}) AS s
     ON CONFLICT (experiment_id, host, worker_id) DO UPDATE
       SET role = EXCLUDED.role, pid = EXCLUDED.pid, state = EXCLUDED.state,
           current_job_id = EXCLUDED.current_job_id, last_heartbeat = EXCLUDED.last_heartbeat,
           started_at = CASE WHEN workers.pid = EXCLUDED.pid THEN workers.started_at ELSE now() END`;
}

/**
 * `sinceMs`: how long ago the state began. A write put off for a moment (so a worker that takes its
 * next job at once never writes `idle` in between) dates the row from the change, not the write.
 */
export async function upsertWorker(db: Queryable, presence: WorkerPresence, sinceMs = 0): Promise<void> {
  await db.query(
    presenceUpsertSql(`VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::int, $6::text, $7::uuid, now() - make_interval(secs => $8::float8 / 1000))`),
    [presence.experimentId, presence.host, presence.workerId, presence.role, presence.pid, presence.state, presence.currentJobId, Math.max(0, sinceMs)],
  );
}

export async function listWorkers(db: Queryable, experimentId: string): Promise<Array<WorkerPresence & { lastHeartbeat: Date; startedAt: Date }>> {
  const { rows } = await db.query(
    `SELECT experiment_id AS "experimentId", host, worker_id AS "workerId", role, pid, state,
            current_job_id AS "currentJobId", last_heartbeat AS "lastHeartbeat", started_at AS "startedAt"
       FROM workers WHERE experiment_id = $1 ORDER BY host, worker_id`,
    [experimentId],
  );
  return rows;
}
