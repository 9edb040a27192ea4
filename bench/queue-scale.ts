import path from 'node:path';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { PgBoss } from 'pg-boss';
import { makeWorkerUtils } from 'graphile-worker';
import { withTransaction } from '../src/shared/db/pool.ts';
import { markQueued } from '../src/shared/db/jobs.ts';
import { sendEvolutionJob } from '../src/shared/queue.ts';
import { createExperiment, whileRunning } from './experiment.ts';
import { clkTck, FIXTURES, processTree, ratio, waitFor, type Benchmark, type Harness, type Proc, type Row } from './harness.ts';

/**
 * The queue path at scale: N jobs (2,000; 300 with --quick) enqueued in one transaction while W
 * idle worker processes (4 and 16) wait, until the last is done. Every side does the same work
 * per job: run `echo '{"score": 1}'` and parse its JSON.
 *
 * - **Loreley**: `fixtures/loreley-queue-worker.mjs`, the real worker runtime and loop (claim,
 *   presence and heartbeats, evaluator, result transaction with card, metrics, succeeded and the
 *   queue job completed) with a plain directory for a worktree, on baseline-kind jobs (no agent,
 *   no commit): the bookkeeping without git. Jobs are sent as the scheduler's dispatch sends them.
 *   It loads Loreley as the bins do (dist/ when current). With `LORELEY_BENCH_CPU_PROF=<dir>` its
 *   processes write V8 CPU profiles there (`--cpu-prof`), to see where a job's time goes.
 * - **raw pg-boss**: `fixtures/pgboss-throughput.mjs`, Loreley's pg-boss options, the command in
 *   the handler, and the worker woken after each job as Loreley's is (at batchSize 1 pg-boss
 *   otherwise waits out its poll interval between jobs, backlog or not).
 * - **graphile-worker**: `fixtures/graphile-throughput.mjs`, concurrency 1 per process.
 *
 * Each side gets a database of its own, so `pg_stat_database.xact_commit` (read after the workers
 * settled, and again after they stopped) counts its transactions only — the bench's own polling
 * (one count every 200 ms) included. CPU per job is the worker processes' utime + stime with their
 * reaped children (`/proc/<pid>/stat` fields 14–17) over the run, plus the same of the processes they
 * started and still hold at the end (Loreley's command launchers, which reap the commands). Database CPU per job is the whole
 * PostgreSQL server's (the postmaster, its live backends, and the backends it reaped) over the same
 * window, which only this side's workers and the bench's polling use. The sides run interleaved.
 */

const COMMAND = ['echo', '{"score": 1}'];

interface Measured {
  readonly jobsPerSecond: number;
  readonly cpuMsPerJob: number;
  readonly databaseCpuMsPerJob: number;
  readonly xactsPerJob: number;
}

/**
 * `backlog`: every job sent in one transaction before the workers start on them (throughput).
 * `trickle`: one job per transaction, TRICKLE_GAP_MS apart, so most workers are idle when a job
 * arrives and every send's NOTIFY wakes all of them (what transactions per job cost then).
 */
type Load = 'backlog' | 'trickle';

const TRICKLE_GAP_MS = 50;

interface Side {
  readonly name: string;
  run(harness: Harness, workers: number, jobs: number, load: Load): Promise<Measured>;
}

export const queueScale: Benchmark = {
  name: 'queue',
  description: 'queue path, N jobs at 4 and 16 workers: Loreley vs raw pg-boss vs graphile-worker (jobs/s, CPU, transactions)',
  async run(harness) {
    const jobs = harness.pick(2000, 300);
    const trickleJobs = harness.pick(200, 60);
    const rows: Row[] = [];
    const sandboxed = loreleySide('default');
    for (const workers of [4, 16]) {
      const results = new Map<string, Measured>();
      // Loreley's default sandbox (bubblewrap where available) is measured once, beside the same path without it.
      // At 16, the same workers under the supervisor (one LISTEN for the host) too: an info row.
      const sides = workers === 4 ? [unsandboxed, sandboxed, pgBossSide, graphileSide] : [unsandboxed, supervisedSide, pgBossSide, graphileSide];
      for (const side of sides) {
        harness.progress(`${workers} workers, ${jobs} jobs: ${side.name}`);
        const measured = await side.run(harness, workers, jobs, 'backlog');
        harness.progress(
          `${side.name}: ${measured.jobsPerSecond.toFixed(1)} jobs/s, ${measured.cpuMsPerJob.toFixed(1)} worker CPU-ms/job, ${measured.databaseCpuMsPerJob.toFixed(1)} database CPU-ms/job, ${measured.xactsPerJob.toFixed(1)} transactions/job`,
        );
        results.set(side.name, measured);
        await harness.stopProcesses();
      }
      const loreley = results.get(unsandboxed.name)!;
      const boss = results.get('raw pg-boss')!;
      const graphile = results.get('graphile-worker')!;
      const rate = (m: Measured) => `${m.jobsPerSecond.toFixed(1)} jobs/s`;
      rows.push(
        { benchmark: `queue path ${workers} workers, ${jobs} jobs: jobs/s vs pg-boss`, loreley: rate(loreley), baseline: `pg-boss ${rate(boss)}`, ratio: ratio(loreley.jobsPerSecond, boss.jobsPerSecond), target: '≥ 0.8×', pass: loreley.jobsPerSecond >= 0.8 * boss.jobsPerSecond },
        { benchmark: `queue path ${workers} workers: jobs/s vs graphile-worker`, loreley: rate(loreley), baseline: `graphile ${rate(graphile)}`, ratio: ratio(loreley.jobsPerSecond, graphile.jobsPerSecond), target: '≥ 0.5×', pass: loreley.jobsPerSecond >= 0.5 * graphile.jobsPerSecond },
        { benchmark: `queue path ${workers} workers: worker CPU per job`, loreley: `${loreley.cpuMsPerJob.toFixed(1)} ms`, baseline: `pg-boss ${boss.cpuMsPerJob.toFixed(1)} ms, graphile ${graphile.cpuMsPerJob.toFixed(1)} ms`, ratio: ratio(loreley.cpuMsPerJob, boss.cpuMsPerJob), target: '', pass: undefined },
        { benchmark: `queue path ${workers} workers: database CPU per job`, loreley: `${loreley.databaseCpuMsPerJob.toFixed(1)} ms`, baseline: `pg-boss ${boss.databaseCpuMsPerJob.toFixed(1)} ms, graphile ${graphile.databaseCpuMsPerJob.toFixed(1)} ms`, ratio: ratio(loreley.databaseCpuMsPerJob, boss.databaseCpuMsPerJob), target: '', pass: undefined },
        { benchmark: `queue path ${workers} workers: transactions per job`, loreley: loreley.xactsPerJob.toFixed(1), baseline: `pg-boss ${boss.xactsPerJob.toFixed(1)}, graphile ${graphile.xactsPerJob.toFixed(1)}`, ratio: ratio(loreley.xactsPerJob, boss.xactsPerJob), target: '≤ 6', pass: loreley.xactsPerJob <= 6 },
      );
      const underSupervisor = results.get(supervisedSide.name);
      if (underSupervisor) {
        rows.push({
          benchmark: `queue path ${workers} workers under loreley's supervisor (one LISTEN, wakes by IPC) vs by hand`,
          loreley: `${rate(underSupervisor)}, ${underSupervisor.xactsPerJob.toFixed(1)} transactions/job, ${underSupervisor.cpuMsPerJob.toFixed(1)} CPU-ms/job with the supervisor`,
          baseline: `${rate(loreley)}, ${loreley.xactsPerJob.toFixed(1)} transactions/job, ${loreley.cpuMsPerJob.toFixed(1)} ms`,
          ratio: ratio(underSupervisor.jobsPerSecond, loreley.jobsPerSecond),
          target: '',
          pass: undefined,
        });
      }
      const withSandbox = results.get(sandboxed.name);
      if (withSandbox) {
        rows.push({
          benchmark: `queue path ${workers} workers: Loreley's default sandbox (bubblewrap where available) vs none`,
          loreley: `${rate(withSandbox)}, ${withSandbox.cpuMsPerJob.toFixed(1)} worker CPU-ms/job`,
          baseline: `${rate(loreley)}, ${loreley.cpuMsPerJob.toFixed(1)} ms`,
          ratio: ratio(withSandbox.jobsPerSecond, loreley.jobsPerSecond),
          target: '',
          pass: undefined,
        });
      }
    }
    // The NOTIFY herd: 16 idle workers, jobs sent one at a time. Loreley as deployed (under its
    // supervisor: one LISTEN for the host, one worker woken per job) is the row; `loreley worker`
    // processes run by hand (each LISTENs, every send wakes all of them) an info row.
    const trickle = new Map<string, Measured>();
    for (const side of [supervisedSide, unsandboxed, pgBossSide, graphileSide]) {
      harness.progress(`16 idle workers, ${trickleJobs} jobs sent one at a time ${TRICKLE_GAP_MS} ms apart: ${side.name}`);
      const measured = await side.run(harness, 16, trickleJobs, 'trickle');
      harness.progress(`${side.name}: ${measured.xactsPerJob.toFixed(1)} transactions/job, ${measured.cpuMsPerJob.toFixed(1)} worker CPU-ms/job, ${measured.databaseCpuMsPerJob.toFixed(1)} database CPU-ms/job`);
      trickle.set(side.name, measured);
      await harness.stopProcesses();
    }
    const loreley = trickle.get(supervisedSide.name)!;
    const byHand = trickle.get(unsandboxed.name)!;
    const boss = trickle.get('raw pg-boss')!;
    const graphile = trickle.get('graphile-worker')!;
    rows.push(
      {
        benchmark: `queue path 16 idle workers, jobs sent one at a time: transactions per job (supervised: one LISTEN per host)`,
        loreley: loreley.xactsPerJob.toFixed(1),
        baseline: `pg-boss ${boss.xactsPerJob.toFixed(1)}, graphile ${graphile.xactsPerJob.toFixed(1)}`,
        ratio: ratio(loreley.xactsPerJob, boss.xactsPerJob),
        target: '≤ 6',
        pass: loreley.xactsPerJob <= 6,
      },
      {
        benchmark: `queue path 16 idle workers, jobs one at a time: supervised vs 16 \`loreley worker\` by hand (each LISTENs)`,
        loreley: `${loreley.xactsPerJob.toFixed(1)} transactions/job, ${loreley.cpuMsPerJob.toFixed(1)} CPU-ms/job, ${loreley.databaseCpuMsPerJob.toFixed(1)} database CPU-ms/job`,
        baseline: `${byHand.xactsPerJob.toFixed(1)} transactions/job, ${byHand.cpuMsPerJob.toFixed(1)} CPU-ms/job, ${byHand.databaseCpuMsPerJob.toFixed(1)} database CPU-ms/job`,
        ratio: ratio(loreley.xactsPerJob, byHand.xactsPerJob),
        target: '',
        pass: undefined,
      },
    );
    return rows;
  },
};

/** utime + stime + cutime + cstime of the processes, in ms. */
function cpuMs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
    } catch {
      // Gone: its time is lost, which only makes the side look cheaper.
    }
  }
  return (ticks * 1000) / clkTck();
}

/**
 * The database server's CPU so far, in ms: the postmaster's own, its live children's, and what it
 * reaped (a backend's time moves into the postmaster's cutime/cstime when its connection ends).
 */
function databaseCpuMs(harness: Harness): number {
  const postmaster = harness.postmasterPid();
  if (postmaster === undefined) return 0;
  let ticks = processTree(postmaster).reduce((sum, stat) => sum + stat.ticks, 0);
  try {
    const text = readFileSync(`/proc/${postmaster}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[13]) + Number(fields[14]);
  } catch {
    // Gone: counted as nothing.
  }
  return (ticks * 1000) / clkTck();
}

async function xactCommits(url: string): Promise<number> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    const { rows } = await client.query<{ n: string }>('SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()');
    return Number(rows[0].n);
  } finally {
    await client.end();
  }
}

/**
 * The common frame: workers started and ready, stats settled, jobs enqueued in one transaction,
 * wait for `done`, stop the workers, read the counters.
 */
async function measure(harness: Harness, options: {
  url: string;
  procs: Proc[];
  /** The processes whose CPU counts (default: `procs`); read once the workers are ready. */
  pids?: () => readonly number[];
  ready: () => Promise<boolean>;
  enqueue: () => Promise<void>;
  done: () => Promise<number>;
  jobs: number;
}): Promise<Measured> {
  await waitFor('every worker ready', options.ready, 120_000, 100);
  // Idle backends flush their statistics within a poll or two.
  await sleep(2500);
  const xactsBefore = await xactCommits(options.url);
  const pids = options.pids?.() ?? options.procs.map((proc) => proc.pid);
  const cpuBefore = cpuMs(pids);
  const databaseBefore = databaseCpuMs(harness);
  const started = performance.now();
  await options.enqueue();
  const first = options.procs[0];
  await whileRunning(first, waitFor(`${options.jobs} jobs done`, async () => (await options.done()) >= options.jobs, 600_000, 200));
  const seconds = (performance.now() - started) / 1000;
  // Processes the workers started since and still hold (a command launcher, which reaps its own
  // commands) count too, whole: they were not there before.
  const counted = new Set(pids);
  const since = options.procs.flatMap((proc) => processTree(proc.pid)).map((stat) => stat.pid).filter((pid) => !counted.has(pid));
  const cpu = cpuMs(pids) - cpuBefore + cpuMs(since);
  // Stopped, so every backend has flushed its counts (read before, the last second could be missing).
  await Promise.all(options.procs.map((proc) => proc.stop(5000)));
  await sleep(500);
  const databaseCpu = databaseCpuMs(harness) - databaseBefore;
  const xacts = (await xactCommits(options.url)) - xactsBefore;
  return { jobsPerSecond: options.jobs / seconds, cpuMsPerJob: cpu / options.jobs, databaseCpuMsPerJob: databaseCpu / options.jobs, xactsPerJob: xacts / options.jobs };
}

/**
 * Loreley's worker. `none`: no sandbox, the command the baselines run (Loreley still starts it in
 * a PID namespace of its own, its containment minimum); `default`: WORKER_SANDBOX unset, so the
 * command runs in bubblewrap where the machine has it, as Loreley runs it out of the box (set
 * explicitly, a missing bubblewrap would stop the worker instead).
 */
function loreleySide(sandbox: 'none' | 'default', supervised = false): Side {
  return {
    name: supervised ? 'Loreley, supervised' : sandbox === 'none' ? 'Loreley' : 'Loreley, default sandbox',
    run: (harness, workers, jobs, load) => runLoreley(harness, workers, jobs, load, sandbox, supervised),
  };
}

const unsandboxed = loreleySide('none');
/**
 * The same workers as children of Loreley's supervisor (`fixtures/loreley-queue-supervisor.mjs`):
 * the supervisor LISTENs for the host and wakes one idle worker per sent job; the workers do not
 * LISTEN. CPU counts the supervisor and its children.
 */
const supervisedSide = loreleySide('none', true);

async function runLoreley(harness: Harness, workers: number, jobs: number, load: Load, sandbox: 'none' | 'default', supervised: boolean): Promise<Measured> {
  const experiment = await createExperiment(harness, {
    label: `queue${workers}${load}${sandbox}${supervised ? 'sup' : ''}`,
    commands: { agent: ['true'], evaluator: COMMAND },
    env: { ...(sandbox === 'none' ? { WORKER_SANDBOX: 'none' } : {}), ...(supervised ? { SUPERVISOR_SPARE_WORKER: 'false' } : {}) },
  });
  try {
    const procs: Proc[] = [];
    const profileDir = process.env.LORELEY_BENCH_CPU_PROF;
    const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profileDir)}`] : [];
    if (supervised) {
      procs.push(harness.spawn('queue supervisor', [...profile, path.join(FIXTURES, 'loreley-queue-supervisor.mjs'), String(workers)], { env: experiment.env, cwd: experiment.root }));
    } else {
      for (let i = 0; i < workers; i += 1) {
        const id = `queue-worker-${i + 1}`;
        procs.push(harness.spawn(id, [...profile, path.join(FIXTURES, 'loreley-queue-worker.mjs'), id], { env: experiment.env, cwd: experiment.root }));
      }
    }
    const experimentId = experiment.settings.experiment.uuid;
    return await measure(harness, {
      url: experiment.databaseUrl,
      procs,
      pids: supervised ? () => processTree(procs[0].pid).map((stat) => stat.pid) : undefined,
      jobs,
      ready: async () => {
        const { rows } = await experiment.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM workers WHERE experiment_id = $1 AND state = 'idle'`, [experimentId]);
        return rows[0].n >= workers;
      },
      enqueue: () =>
        inTransactions(load, jobs, (count) =>
          withTransaction(experiment.pool, async (client) => {
            const { rows } = await client.query<{ id: string }>(
              `INSERT INTO evolution_jobs (experiment_id, kind, base_commit)
               SELECT $1, 'baseline', md5(random()::text || i) || '00000000' FROM generate_series(1, $2) AS i RETURNING id`,
              [experimentId, count],
            );
            for (const row of rows) await markQueued(client, row.id, await sendEvolutionJob(experiment.boss, experiment.settings.queue.name, { id: row.id, priority: 0 }, client));
          }),
        ),
      done: async () => {
        const { rows } = await experiment.pool.query<{ n: number; failed: number }>(
          `SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'failed')::int AS failed FROM evolution_jobs WHERE experiment_id = $1 AND status IN ('succeeded', 'failed')`,
          [experimentId],
        );
        if (rows[0].failed > 0) {
          const { rows: errors } = await experiment.pool.query<{ e: string }>(`SELECT last_error AS e FROM evolution_jobs WHERE status = 'failed' LIMIT 1`);
          throw new Error(`a Loreley job failed: ${errors[0]?.e}`);
        }
        return rows[0].n;
      },
    });
  } finally {
    await experiment.close();
  }
}

/** Sends `jobs` jobs by `send(count)`: all in one call (backlog), or one at a time TRICKLE_GAP_MS apart. */
async function inTransactions(load: Load, jobs: number, send: (count: number) => Promise<unknown>): Promise<void> {
  if (load === 'backlog') {
    await send(jobs);
    return;
  }
  for (let i = 0; i < jobs; i += 1) {
    if (i > 0) await sleep(TRICKLE_GAP_MS);
    await send(1);
  }
}

/** A baseline's worker processes (a fixture each, a bare environment), counting their 'ready' messages. */
function spawnBaselineWorkers(harness: Harness, label: string, workers: number, args: string[]): { procs: Proc[]; ready: () => number } {
  const procs: Proc[] = [];
  let ready = 0;
  for (let i = 0; i < workers; i += 1) {
    const proc = harness.spawn(`${label} worker ${i + 1}`, args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      cwd: harness.tempDir(`${label}-worker`),
      ipc: true,
    });
    proc.child.on('message', (message: { type?: string }) => {
      if (message.type === 'ready') ready += 1;
    });
    procs.push(proc);
  }
  return { procs, ready: () => ready };
}

const pgBossSide: Side = {
  name: 'raw pg-boss',
  async run(harness, workers, jobs, load) {
    const url = await harness.createDatabase(`pgboss${workers}${load}`);
    const schema = 'pgboss';
    const queue = 'bench-throughput';
    // The sender fetches nothing: no LISTEN (it would read, and commit for, every NOTIFY).
    const boss = new PgBoss({ connectionString: url, schema, max: 3, useListenNotify: false, supervise: false, schedule: false, migrate: true, registerInstance: false });
    boss.on('error', (error) => harness.progress(`bench pg-boss: ${error.message}`));
    await boss.start();
    await boss.createQueue(queue, { notify: true });
    const { procs, ready } = spawnBaselineWorkers(harness, 'pg-boss', workers, [path.join(FIXTURES, 'pgboss-throughput.mjs'), url, schema, queue, JSON.stringify(COMMAND)]);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      return await measure(harness, {
        url,
        procs,
        jobs,
        ready: async () => ready() >= workers,
        enqueue: () => inTransactions(load, jobs, (count) => boss.insert(queue, Array.from({ length: count }, () => ({ data: {} })))),
        done: async () => {
          const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${schema}.job WHERE name = $1 AND state = 'completed'`, [queue]);
          return rows[0].n;
        },
      });
    } finally {
      await boss.stop({ graceful: false }).catch(() => undefined);
      await pool.end();
    }
  },
};

const graphileSide: Side = {
  name: 'graphile-worker',
  async run(harness, workers, jobs, load) {
    const url = await harness.createDatabase(`graphile${workers}${load}`);
    const utils = await makeWorkerUtils({ connectionString: url });
    await utils.migrate();
    const { procs, ready } = spawnBaselineWorkers(harness, 'graphile', workers, [path.join(FIXTURES, 'graphile-throughput.mjs'), url, JSON.stringify(COMMAND)]);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    try {
      return await measure(harness, {
        url,
        procs,
        jobs,
        ready: async () => ready() >= workers,
        enqueue: () => inTransactions(load, jobs, (count) => utils.addJobs(Array.from({ length: count }, () => ({ identifier: 'job', payload: {} })))),
        done: async () => {
          const { rows } = await pool.query<{ n: number; failed: number }>(
            `SELECT count(*)::int AS n, count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed FROM graphile_worker.jobs`,
          );
          if (rows[0].failed > 0) throw new Error('a graphile-worker job failed');
          return jobs - rows[0].n;
        },
      });
    } finally {
      await utils.release();
      await pool.end();
    }
  },
};

