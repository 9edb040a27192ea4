import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { getJob, insertJob, markQueued, type EvolutionJob } from '../../src/shared/db/jobs.ts';
import { withTransaction, type Pool } from '../../src/shared/db/pool.ts';
import { openExperimentDatabase } from '../../src/shared/experiment-database.ts';
import { sendEvolutionJob, type PgBoss } from '../../src/shared/queue.ts';
import { loadSettings, type Settings } from '../../src/shared/settings/index.ts';
import { createTestDatabase } from './database.ts';
import { createRemote, tempDir } from './git.ts';
import { baseEnv, killAllSpawned, NODE, spawnLoreley, waitFor, type Spawned } from './processes.ts';

/**
 * An experiment for process tests: a temp directory with a bare git remote, a fresh database, an
 * agent and an evaluator script, and the environment a supervisor or worker runs with.
 *
 * The agent and evaluator are one script each whose behaviour a job picks through its payload
 * (`payload.agent`, `payload.evaluator`), so one worker process can run every case. Both record
 * what they saw (pid, cwd, grandchild pids) in `<root>/records/<jobId>.<agent|evaluator>.json`.
 */

export interface Fixture {
  readonly root: string;
  readonly remote: string;
  readonly baseCommit: string;
  readonly databaseUrl: string | undefined;
  readonly recordsDir: string;
  readonly logsDir: string;
  readonly worktree: string;
  readonly env: Record<string, string>;
}

export interface FixtureOptions {
  /** A slug; unique per test keeps log directories and queues apart. */
  readonly experimentId: string;
  /** false: leave DATABASE_URL unset (embedded database). */
  readonly database?: boolean;
  readonly env?: Record<string, string | undefined>;
}

const AGENT = `
import { appendFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const mode = context.payload.agent ?? 'edit';
// Written then renamed, so a test polling for the file never reads it half-written.
const record = (extra) => { const file = records + '/' + context.jobId + '.agent.json'; writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, cwd: process.cwd(), mode, ...extra })); renameSync(file + '.tmp', file); };
record({});
if (mode === 'sleep') await new Promise((resolve) => setTimeout(resolve, context.payload.sleepMs ?? 30000));
if (mode === 'noop') { console.log('nothing to change'); process.exit(0); }
if (mode === 'leak') { console.log('key ' + process.env.OPENAI_API_KEY + ' url ' + process.env.DATABASE_URL); console.error('leaking ' + process.env.OPENAI_API_KEY + ' and ' + process.env.DATABASE_URL); process.exit(1); }
appendFileSync('prog.txt', 'y = ' + JSON.stringify(context.jobId) + '\\n');
console.log('edited prog.txt');
console.log(JSON.stringify({ summary: 'agent edit for ' + context.jobId }));
`;

const EVALUATOR = `
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const mode = context.payload.evaluator ?? 'ok';
// Written then renamed, so a test polling for the file never reads it half-written.
const record = (extra) => { const file = records + '/' + context.jobId + '.evaluator.json'; writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, cwd: process.cwd(), mode, ...extra })); renameSync(file + '.tmp', file); };
// A grandchild in the evaluator's process group: it must die with the evaluator.
const grandchild = () => spawn('sleep', ['30'], { stdio: 'ignore' }).pid;
record({});
switch (mode) {
  case 'ok':
    console.log('evaluating');
    console.log(JSON.stringify({ summary: 'scored ' + context.jobId, metrics: [
      { name: 'score', value: 1.5, unit: 'points', higher_is_better: true },
      { name: 'lines', value: readFileSync('prog.txt', 'utf8').split('\\n').length, higher_is_better: false },
    ] }));
    break;
  case 'flat':
    console.log(JSON.stringify({ summary: 'flat', score: 2, size: 3 }));
    break;
  case 'invalid-json':
    console.log('this is not {json');
    break;
  case 'null-value':
    console.log(JSON.stringify({ summary: 'null', metrics: [{ name: 'score', value: null }] }));
    break;
  case 'string-value':
    console.log(JSON.stringify({ score: 'abc' }));
    break;
  case 'too-many': {
    const metrics = {};
    for (let i = 0; i < 65; i += 1) metrics['m' + i] = i;
    console.log(JSON.stringify(metrics));
    break;
  }
  case 'exit':
    record({ grandchild: grandchild() });
    console.error('evaluator broke on purpose');
    process.exit(3);
  case 'timeout':
    record({ grandchild: grandchild() });
    await new Promise((resolve) => setTimeout(resolve, 60000));
    break;
}
`;

let counter = 0;

export async function createFixture(options: FixtureOptions): Promise<Fixture> {
  const root = tempDir('loreley-proc-');
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n', 'README.md': '# test program\n' }, root);
  const recordsDir = path.join(root, 'records');
  mkdirSync(recordsDir);
  const agent = path.join(root, 'agent.mjs');
  const evaluator = path.join(root, 'evaluator.mjs');
  writeFileSync(agent, AGENT);
  writeFileSync(evaluator, EVALUATOR);
  const databaseUrl = options.database === false ? undefined : await createTestDatabase();
  const worktree = path.join(root, 'clone');
  const env = baseEnv({
    EXPERIMENT_ID: `${options.experimentId}-${process.pid}-${counter++}`,
    DATABASE_URL: databaseUrl,
    WORKER_REPO_REMOTE_URL: remote,
    WORKER_REPO_WORKTREE: worktree,
    WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, recordsDir]),
    WORKER_EVALUATOR_COMMAND: JSON.stringify([NODE, evaluator, recordsDir]),
    LOGS_BASE_DIR: root,
    LORELEY_DATA_DIR: path.join(root, 'data'),
    SUPERVISOR_HEARTBEAT_INTERVAL_MS: '200',
    SUPERVISOR_STATUS_INTERVAL_SECONDS: '0',
    SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '100',
    TASKS_POLLING_INTERVAL_SECONDS: '0.5',
    // These scripts write their records outside the worktree and report their own pids, which a
    // sandbox (read-only filesystem) or a PID namespace would change: test/faults/commands*
    // cover those modes.
    WORKER_SANDBOX: 'none',
    WORKER_CONTAINMENT: 'process-group',
    ...options.env,
  });
  return { root, remote, baseCommit: commit, databaseUrl, recordsDir, logsDir: path.join(root, 'logs'), worktree, env };
}

export function fixtureSettings(fixture: Fixture, env: Record<string, string> = {}): Settings {
  return loadSettings({ env: { ...fixture.env, ...env }, dotenv: false, cwd: fixture.root });
}

/** The test's own connection to an experiment's database and queue, to create jobs and look at rows. */
export interface QueueClient {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  /** Inserts an evolution job, sends its queue message and marks it queued. */
  enqueue(payload?: Record<string, unknown>): Promise<string>;
  job(id: string): Promise<EvolutionJob>;
  /** pg-boss's rows for the experiment's queue. */
  queueJobs(): Promise<Array<{ id: string; state: string; data: { jobId?: string }; retry_count: number; output: unknown }>>;
  close(): Promise<void>;
}

export async function openQueue(fixture: Fixture, url = fixture.databaseUrl): Promise<QueueClient> {
  if (!url) throw new Error('openQueue needs a database URL');
  const settings = loadSettings({ env: { ...fixture.env, DATABASE_URL: url }, dotenv: false, cwd: fixture.root });
  const database = await openExperimentDatabase({ settings, applicationName: 'loreley-test', supervise: false });
  const { pool, boss } = database;
  return {
    settings,
    pool,
    boss,
    async enqueue(payload = {}) {
      // One transaction: a worker woken by the send must not find the row locked by markQueued
      // (that is a lock conflict, which skips the job for good).
      return withTransaction(pool, async (client) => {
        const job = await insertJob(client, { experimentId: settings.experiment.uuid, baseCommit: fixture.baseCommit, payload });
        const queueJobId = await sendEvolutionJob(boss, settings.queue.name, job, client);
        await markQueued(client, job.id, queueJobId);
        return job.id;
      });
    },
    async job(id) {
      const job = await getJob(pool, id);
      if (!job) throw new Error(`no job ${id}`);
      return job;
    },
    async queueJobs() {
      const { rows } = await pool.query(
        `SELECT id, state::text AS state, data, retry_count, output FROM ${settings.database.bossSchema}.job WHERE name = $1 ORDER BY created_on`,
        [settings.queue.name],
      );
      return rows;
    },
    async close() {
      await database.close({ graceful: false }).catch(() => undefined);
    },
  };
}

export function logDir(fixture: Fixture, settings: Settings, role: string, workerId: string): string {
  return path.join(fixture.logsDir, settings.experiment.namespace, role, workerId);
}

/** An agent that records its pid and a grandchild's (same process group), then sleeps past any test. */
export const SLEEPING_AGENT = `
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const grandchild = spawn('sleep', ['30'], { stdio: 'ignore' });
const file = records + '/' + context.jobId + '.agent.json';
writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, grandchild: grandchild.pid }));
renameSync(file + '.tmp', file);
await new Promise((resolve) => setTimeout(resolve, 30000));
`;

/** `loreley worker` for the fixture, resolved once it reports idle (its start-up sweep done). */
export async function startWorker(fixture: Fixture, queue: QueueClient): Promise<Spawned> {
  const worker = spawnLoreley(['worker'], { env: fixture.env, cwd: fixture.root });
  await waitFor('the worker to be idle', async () => {
    const { rows } = await queue.pool.query('SELECT state FROM workers WHERE worker_id = $1', ['worker0001']);
    return rows[0]?.state === 'idle';
  }, 60_000, 50, worker);
  return worker;
}

/**
 * Ends what a test started: the worker (drained by SIGTERM), every spawned group, and stray
 * agent processes, which run in process groups of their own.
 */
export async function stopEverything(worker: Spawned | undefined, strays: readonly number[] = []): Promise<void> {
  if (worker && worker.child.exitCode === null) {
    process.kill(worker.pid, 'SIGTERM');
    await worker.waitExit(20_000).catch(() => undefined);
  }
  killAllSpawned();
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  }
}
