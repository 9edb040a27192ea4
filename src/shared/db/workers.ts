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

export async function upsertWorker(db: Queryable, presence: WorkerPresence): Promise<void> {
  await db.query(
    `INSERT INTO workers (experiment_id, host, worker_id, role, pid, state, current_job_id, started_at, last_heartbeat)
     VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())
     ON CONFLICT (experiment_id, host, worker_id) DO UPDATE
       SET role = EXCLUDED.role, pid = EXCLUDED.pid, state = EXCLUDED.state,
           current_job_id = EXCLUDED.current_job_id, last_heartbeat = now(),
           started_at = CASE WHEN workers.pid = EXCLUDED.pid THEN workers.started_at ELSE now() END`,
    [presence.experimentId, presence.host, presence.workerId, presence.role, presence.pid, presence.state, presence.currentJobId],
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
