import type { Queryable } from './pool.ts';

/** SQL for the `hosts` table (one row per supervisor) and the finished-run check extra hosts poll. */

export interface HostRow {
  readonly host: string;
  readonly machine: string;
  readonly pid: number;
  readonly state: string;
  readonly workers: number;
  readonly scheduler: boolean;
  readonly startedAt: Date;
  readonly lastHeartbeat: Date;
  /** Seconds since the last heartbeat, by the database's clock. */
  readonly ageSeconds: number;
}

const COLUMNS = `host, machine, pid, state, workers, scheduler, started_at AS "startedAt", last_heartbeat AS "lastHeartbeat",
  EXTRACT(EPOCH FROM now() - last_heartbeat)::float8 AS "ageSeconds"`;

/** The row of a host id, locked for the caller's transaction (created for us when there is none). */
export async function lockHost(db: Queryable, experimentId: string, host: string, me: { machine: string; pid: number }): Promise<{ row: HostRow; created: boolean }> {
  const inserted = await db.query(
    `INSERT INTO hosts (experiment_id, host, machine, pid, state) VALUES ($1, $2, $3, $4, 'starting') ON CONFLICT (experiment_id, host) DO NOTHING`,
    [experimentId, host, me.machine, me.pid],
  );
  const { rows } = await db.query<HostRow>(`SELECT ${COLUMNS} FROM hosts WHERE experiment_id = $1 AND host = $2 FOR UPDATE`, [experimentId, host]);
  return { row: rows[0], created: (inserted.rowCount ?? 0) > 0 };
}

export async function takeHost(db: Queryable, experimentId: string, host: string, me: { machine: string; pid: number; workers: number; scheduler: boolean }): Promise<void> {
  await db.query(
    `UPDATE hosts SET machine = $3, pid = $4, workers = $5, scheduler = $6, state = 'running', started_at = now(), last_heartbeat = now()
      WHERE experiment_id = $1 AND host = $2`,
    [experimentId, host, me.machine, me.pid, me.workers, me.scheduler],
  );
}

/** Refreshes our heartbeat; false when the row is no longer ours (another supervisor took it over). */
export async function hostHeartbeat(db: Queryable, experimentId: string, host: string, me: { machine: string; pid: number }): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE hosts SET last_heartbeat = now() WHERE experiment_id = $1 AND host = $2 AND machine = $3 AND pid = $4`,
    [experimentId, host, me.machine, me.pid],
  );
  return (rowCount ?? 0) > 0;
}

export async function releaseHost(db: Queryable, experimentId: string, host: string, me: { machine: string; pid: number }): Promise<void> {
  await db.query(
    `UPDATE hosts SET state = 'stopped', last_heartbeat = now() WHERE experiment_id = $1 AND host = $2 AND machine = $3 AND pid = $4`,
    [experimentId, host, me.machine, me.pid],
  );
}

export async function listHosts(db: Queryable, experimentId: string): Promise<HostRow[]> {
  const { rows } = await db.query<HostRow>(`SELECT ${COLUMNS} FROM hosts WHERE experiment_id = $1 ORDER BY host`, [experimentId]);
  return rows;
}

/**
 * The run is over: the scheduler marked the experiment finished and no job is left unfinished.
 * What a host without a scheduler learns from the database under --exit-when-done.
 */
export async function experimentFinished(db: Queryable, experimentId: string): Promise<boolean> {
  const { rows } = await db.query<{ finished: boolean }>(
    `SELECT (e.finished_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM evolution_jobs j WHERE j.experiment_id = e.id AND j.status IN ('pending', 'queued', 'running'))) AS finished
       FROM experiments e WHERE e.id = $1`,
    [experimentId],
  );
  return rows[0]?.finished ?? false;
}

/** A restarted scheduler with budget left clears the mark, so extra hosts do not leave early. */
export async function reopenExperiment(db: Queryable, experimentId: string): Promise<boolean> {
  const { rowCount } = await db.query('UPDATE experiments SET finished_at = NULL WHERE id = $1 AND finished_at IS NOT NULL', [experimentId]);
  return (rowCount ?? 0) > 0;
}
