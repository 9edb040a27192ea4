import path from 'node:path';
import { insertJob } from '../src/shared/db/jobs.ts';
import { withTransaction, type Pool } from '../src/shared/db/pool.ts';
import { openExperimentDatabase } from '../src/shared/experiment-database.ts';
import { sendEvolutionJob, type PgBoss } from '../src/shared/queue.ts';
import { loadSettings, type Settings } from '../src/shared/settings/index.ts';
import { createRemote } from '../test/helpers/git.ts';
import { LORELEY_BIN, waitFor, type Harness, type Proc } from './harness.ts';

/**
 * A Loreley experiment for one benchmark: a bare git remote with one commit, a fresh database
 * (migrated, experiment row in place, queues created), the environment a worker or supervisor
 * runs with, and the bench's own pool and pg-boss to create jobs and read rows.
 */

/** Commands the worker runs: argument lists, no shell. */
export interface Commands {
  readonly agent: readonly string[];
  readonly evaluator: readonly string[];
}

/** A quick real mutation: one node process appending a line; and an evaluator printing a score. */
export function nodeCommands(node: string): Commands {
  return {
    agent: [node, '-e', "require('node:fs').appendFileSync('prog.txt', 'y = ' + Date.now() + '\\n')"],
    evaluator: [node, '-e', 'console.log(JSON.stringify({ score: 1 }))'],
  };
}

/** The least a job can do: a shell appending a line (a commit needs a change) and echo. */
export const NOOP_COMMANDS: Commands = {
  agent: ['sh', '-c', 'echo y >> prog.txt'],
  evaluator: ['echo', '{"score": 1}'],
};

export interface Experiment {
  readonly root: string;
  readonly remote: string;
  readonly baseCommit: string;
  readonly databaseUrl: string;
  readonly env: Record<string, string>;
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  /** Inserts a pending evolution job (not timed) and returns its id. */
  insertJob(payload?: Record<string, unknown>): Promise<string>;
  /** Sends the queue message for a job, as the scheduler's dispatch does. */
  send(jobId: string): Promise<string>;
  job(id: string): Promise<JobTimes>;
  /** The workers-table row of one process. */
  presence(workerId: string): Promise<Presence | undefined>;
  /** Waits for the job to finish and the worker to write its idle presence after it. */
  waitDone(jobId: string, workerId: string, timeoutMs?: number): Promise<{ job: JobTimes; idleAt: number }>;
  close(): Promise<void>;
}

/** Epoch milliseconds (sub-millisecond precision) from the row, or null. */
export interface JobTimes {
  readonly status: string;
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  readonly lastError: string | null;
}

export interface Presence {
  readonly pid: number;
  readonly state: string;
  readonly currentJobId: string | null;
  readonly lastHeartbeat: number;
}

export interface ExperimentOptions {
  readonly label: string;
  readonly commands: Commands;
  readonly env?: Record<string, string>;
}

export async function createExperiment(harness: Harness, options: ExperimentOptions): Promise<Experiment> {
  const root = harness.tempDir(options.label);
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n', 'README.md': '# bench program\n' }, root);
  const databaseUrl = await harness.createDatabase(options.label);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    EXPERIMENT_ID: `bench-${options.label}-${process.pid}`,
    DATABASE_URL: databaseUrl,
    WORKER_REPO_REMOTE_URL: remote,
    WORKER_AGENT_COMMAND: JSON.stringify(options.commands.agent),
    WORKER_EVALUATOR_COMMAND: JSON.stringify(options.commands.evaluator),
    LOGS_BASE_DIR: root,
    LORELEY_DATA_DIR: path.join(root, 'data'),
    LOG_CONSOLE: 'false',
    ...options.env,
  };
  const settings = loadSettings({ env, dotenv: false, cwd: root });
  const database = await openExperimentDatabase({
    settings,
    applicationName: 'loreley-bench',
    supervise: false,
    // It sends jobs and fetches none: a LISTEN here would read (and commit for) every NOTIFY.
    listen: false,
    onQueueError: (error) => harness.progress(`bench queue error: ${String(error)}`),
  });
  const { pool, boss } = database;

  const job = async (id: string): Promise<JobTimes> => {
    const { rows } = await pool.query<JobTimes>(
      `SELECT status, last_error AS "lastError",
              extract(epoch FROM started_at)::float8 * 1000 AS "startedAt",
              extract(epoch FROM finished_at)::float8 * 1000 AS "finishedAt"
         FROM evolution_jobs WHERE id = $1`,
      [id],
    );
    if (!rows[0]) throw new Error(`no job ${id}`);
    return rows[0];
  };
  const presence = async (workerId: string): Promise<Presence | undefined> => {
    const { rows } = await pool.query<Presence>(
      `SELECT pid, state, current_job_id AS "currentJobId", extract(epoch FROM last_heartbeat)::float8 * 1000 AS "lastHeartbeat"
         FROM workers WHERE experiment_id = $1 AND worker_id = $2`,
      [settings.experiment.uuid, workerId],
    );
    return rows[0];
  };

  return {
    root,
    remote,
    baseCommit: commit,
    databaseUrl,
    env,
    settings,
    pool,
    boss,
    async insertJob(payload = {}) {
      const row = await insertJob(pool, { experimentId: settings.experiment.uuid, baseCommit: commit, payload });
      return row.id;
    },
    async send(jobId) {
      // Bench jobs are inserted with the default priority.
      return withTransaction(pool, (client) => sendEvolutionJob(boss, settings.queue.name, { id: jobId, priority: 0 }, client));
    },
    job,
    presence,
    async waitDone(jobId, workerId, timeoutMs = 60_000) {
      const done = await waitFor(
        `job ${jobId} to finish`,
        async () => {
          const row = await job(jobId);
          return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
        },
        timeoutMs,
        25,
      );
      if (done.status !== 'succeeded') throw new Error(`job ${jobId} failed: ${done.lastError}`);
      // The worker writes its presence as idle once the job, worktree removal included, is over.
      const idle = await waitFor(
        `the worker's idle presence after job ${jobId}`,
        async () => {
          const row = await presence(workerId);
          return row && row.state === 'idle' && row.lastHeartbeat >= done.finishedAt! ? row : undefined;
        },
        10_000,
        10,
      );
      return { job: done, idleAt: idle.lastHeartbeat };
    },
    async close() {
      await database.close({ graceful: false }).catch(() => undefined);
    },
  };
}

/** Starts `loreley worker` in the foreground (as pm2 would) and waits until it is idle on the queue. */
export async function startWorker(harness: Harness, experiment: Experiment, workerId = 'bench-worker'): Promise<Proc> {
  const proc = harness.spawn(`loreley worker ${workerId}`, [LORELEY_BIN, 'worker', '--worker-id', workerId], { env: experiment.env, cwd: experiment.root });
  await whileRunning(proc, waitFor(`${workerId} to be idle on the queue`, async () => {
    const row = await experiment.presence(workerId);
    return row?.pid === proc.pid && row.state === 'idle';
  }));
  return proc;
}

/** `promise`, unless `proc` exits first: then an error carrying its output. */
export async function whileRunning<T>(proc: Proc, promise: Promise<T>): Promise<T> {
  const exit = proc.exited.then(({ code, signal }) => {
    throw new Error(`${proc.name} exited (${signal ?? `code ${code}`}) unexpectedly:\n${proc.output().slice(-3000)}`);
  });
  try {
    return await Promise.race([promise, exit]);
  } catch (error) {
    if (!proc.isRunning()) throw error;
    throw new Error(`${(error as Error).message}\n--- ${proc.name} output (tail) ---\n${proc.output().slice(-3000)}`);
  } finally {
    exit.catch(() => undefined);
  }
}
