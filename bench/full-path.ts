import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { markQueued } from '../src/shared/db/jobs.ts';
import { withTransaction } from '../src/shared/db/pool.ts';
import { sendEvolutionJob } from '../src/shared/queue.ts';
import { createExperiment, NOOP_COMMANDS, whileRunning, type Experiment } from './experiment.ts';
import { stallReport } from './stall-report.ts';
import { LORELEY_BIN, ms, ratio, summary, treeCpuMs, type Benchmark, type Harness, type Proc, type Row } from './harness.ts';

/**
 * The full job path with git at scale: N evolution jobs (2,000; 300 with --quick) on 4 workers,
 * against the same steps as 4 plain bash loops, in the same run.
 *
 * - **Loreley**: N jobs enqueued at once as the scheduler's dispatch enqueues them (row, queue
 *   send, row marked queued; parents: the root), taken by 4 `loreley worker` processes: worktree
 *   from the parent, the agent (`sh -c 'echo y >> prog.txt'`), commit, push of the job branch, the
 *   evaluator (`echo '{"score": 1}'`), the result stored, the worktree removed. Default worker
 *   settings (the sandbox included). A `loreley scheduler` runs beside them as in production:
 *   it ingests (by the evaluator's metric, so the embedding's CPU stays out of these figures),
 *   publishes the notes and prunes finished jobs' branches from the remote after every tick.
 * - **plain shell**: 4 bash loops, each with a clone of its own, pushing to a bare remote of
 *   their own: `git worktree add`, the same agent, `git add --all`, `git commit`, `git push`,
 *   the same evaluator (the `echo` binary, as Loreley starts it), `git worktree remove`. Like
 *   Loreley without its pruning, every job leaves its branch on the remote.
 *
 * Rates: jobs/s over the whole run (first start to last finish), over the first `W` finished
 * jobs (400; 60 with --quick) from the first start, and over the last `W` (from the finish before
 * them). Loreley's times are the job rows' started_at/finished_at (the database's clock), the
 * loops' are bash's $EPOCHREALTIME.
 */

const COMMANDS = NOOP_COMMANDS;
const WORKERS = 4;

interface Rates {
  readonly jobs: number;
  readonly overall: number;
  readonly first: number;
  readonly last: number;
  /** Remote refs under refs/heads at the end. */
  readonly remoteBranches: number;
  /** CPU-ms per job over the first and the last W jobs (every process of the side, see cpuPerJob). */
  readonly cpu: { readonly first: number; readonly last: number };
}

/** CPU-ms used so far by a side's processes, and how many jobs it had finished then. */
interface CpuSample {
  readonly done: number;
  readonly cpuMs: number;
}

export const fullPath: Benchmark = {
  name: 'fullpath',
  description: 'full job path with git, 4 workers, N jobs: Loreley vs 4 plain bash loops (jobs/s overall, first and last W)',
  async run(harness) {
    const jobs = harness.pick(2000, 300);
    const window = harness.pick(400, 60);
    harness.progress(`plain shell: ${WORKERS} bash loops, ${jobs} jobs`);
    const plain = await plainLoops(harness, jobs, window);
    harness.progress(`plain shell: ${describe(plain, window)}`);
    harness.progress(`Loreley: scheduler + ${WORKERS} workers, ${jobs} jobs`);
    const loreley = await loreleyRun(harness, jobs, window);
    harness.progress(`Loreley: ${describe(loreley, window)}`);
    const rate = (value: number) => `${value.toFixed(1)} jobs/s`;
    return [
      { benchmark: `full path ${WORKERS} workers, ${jobs} jobs: jobs/s`, loreley: rate(loreley.overall), baseline: `plain shell ${rate(plain.overall)}`, ratio: ratio(loreley.overall, plain.overall), target: '≥ 0.8×', pass: loreley.overall >= 0.8 * plain.overall },
      { benchmark: `full path: last ${window} vs first ${window} jobs`, loreley: `${rate(loreley.last)} vs ${rate(loreley.first)}`, baseline: `plain ${rate(plain.last)} vs ${rate(plain.first)}`, ratio: ratio(loreley.last, loreley.first), target: '≥ 0.9×', pass: loreley.last >= 0.9 * loreley.first },
      {
        benchmark: `full path: CPU-ms per job, last ${window} vs first ${window}`,
        loreley: `${loreley.cpu.last.toFixed(1)} vs ${loreley.cpu.first.toFixed(1)}`,
        baseline: `plain ${plain.cpu.last.toFixed(1)} vs ${plain.cpu.first.toFixed(1)}`,
        ratio: ratio(loreley.cpu.last, loreley.cpu.first),
        target: 'info',
        pass: undefined,
      },
      { benchmark: 'full path: branches left on the remote', loreley: String(loreley.remoteBranches), baseline: `plain ${plain.remoteBranches}`, ratio: undefined, target: 'info', pass: undefined },
    ] satisfies Row[];
  },
};

function describe(rates: Rates, window: number): string {
  return (
    `${rates.overall.toFixed(1)} jobs/s overall, first ${window} ${rates.first.toFixed(1)}, last ${window} ${rates.last.toFixed(1)} jobs/s; ` +
    `CPU per job first ${window} ${rates.cpu.first.toFixed(1)} ms, last ${window} ${rates.cpu.last.toFixed(1)} ms; ${rates.remoteBranches} branches on the remote`
  );
}

/** Rates from the start (ms) and each job's finish (ms). */
function rates(start: number, finishes: readonly number[], window: number, remoteBranches: number, cpu: Rates['cpu']): Rates {
  const sorted = [...finishes].sort((a, b) => a - b);
  const n = sorted.length;
  const w = Math.min(window, n - 1);
  return {
    jobs: n,
    overall: n / ((sorted[n - 1] - start) / 1000),
    first: w / ((sorted[w - 1] - start) / 1000),
    last: w / ((sorted[n - 1] - sorted[n - 1 - w]) / 1000),
    remoteBranches,
    cpu,
  };
}

/**
 * CPU-ms per job over the first W and the last W jobs, from samples of the side's cumulative CPU
 * (its process trees: git, commands, PostgreSQL included): what a job costs early and late in the
 * run whatever else the machine runs, where the rates above move with the machine's load. The first
 * window starts after the first W/20 jobs, so the processes' start-up is left out.
 */
function cpuPerJob(samples: readonly CpuSample[], jobs: number, window: number): Rates['cpu'] {
  const perJob = (from: CpuSample | undefined, to: CpuSample | undefined) =>
    from && to && to.done > from.done ? (to.cpuMs - from.cpuMs) / (to.done - from.done) : Number.NaN;
  const firstFrom = samples.find((sample) => sample.done >= Math.ceil(window / 20));
  const firstTo = samples.find((sample) => firstFrom !== undefined && sample.done >= firstFrom.done + window);
  const lastFrom = samples.findLast((sample) => sample.done <= jobs - window);
  return { first: perJob(firstFrom, firstTo), last: perJob(lastFrom, samples.at(-1)) };
}

/** A side's CPU-ms so far: each root's tree as last seen (a loop that ended keeps its total). */
class CpuTotal {
  private readonly last = new Map<number, number>();

  sample(roots: readonly number[]): number {
    for (const [root, ms] of treeCpuMs(roots)) this.last.set(root, ms);
    let total = 0;
    for (const ms of this.last.values()) total += ms;
    return total;
  }
}

function countBranches(bareRemote: string): number {
  const out = execFileSync('git', ['for-each-ref', '--format=%(refname)', 'refs/heads/'], { cwd: bareRemote, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out.split('\n').filter(Boolean).length;
}

const LOOP = String.raw`
set -eu
remote=$1; base=$2; dir=$3; loop=$4; jobs=$5; times=$6; echo_bin=$7
clone=$dir/clone-$loop
git clone --quiet --no-checkout "$remote" "$clone"
for n in $(seq 1 "$jobs"); do
  wt=$dir/wt-$loop-$n
  branch=plain/job/$loop/$n
  git -C "$clone" worktree add --quiet --force -B "$branch" "$wt" "$base"
  (cd "$wt" && sh -c 'echo y >> prog.txt')
  git -C "$wt" add --all
  git -C "$wt" -c user.name=Plain -c user.email=plain@localhost commit --quiet --no-verify --no-gpg-sign -m "plain job $loop/$n"
  git -C "$wt" push --quiet --force origin "HEAD:refs/heads/$branch"
  (cd "$wt" && "$echo_bin" '{"score": 1}' >/dev/null)
  git -C "$clone" worktree remove --force --force "$wt"
  echo "$EPOCHREALTIME" >> "$times"
done
`;

async function plainLoops(harness: Harness, jobs: number, window: number): Promise<Rates> {
  const dir = harness.tempDir('fullpath-plain');
  const source = harness.tempDir('fullpath-plain-source');
  // The same starting repository as the Loreley side, as a bare remote of the loops' own.
  execFileSync('git', ['init', '--quiet', source]);
  writeFileSync(path.join(source, 'prog.txt'), 'x = 1\n');
  writeFileSync(path.join(source, 'README.md'), '# bench program\n');
  execFileSync('git', ['-C', source, 'add', '--all']);
  execFileSync('git', ['-C', source, '-c', 'user.name=Bench', '-c', 'user.email=bench@localhost', 'commit', '--quiet', '-m', 'root']);
  const remote = path.join(dir, 'remote.git');
  execFileSync('git', ['clone', '--quiet', '--bare', source, remote]);
  const base = execFileSync('git', ['-C', source, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
  const echoBin = execFileSync('sh', ['-c', 'command -v echo || true'], { encoding: 'utf8' }).trim();
  const echoPath = echoBin.startsWith('/') ? echoBin : '/bin/echo';
  const script = path.join(dir, 'loop.sh');
  writeFileSync(script, LOOP);
  const perLoop = Math.ceil(jobs / WORKERS);
  const timesFiles = Array.from({ length: WORKERS }, (_, i) => path.join(dir, `times-${i}`));
  for (const file of timesFiles) writeFileSync(file, '');
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' };
  const start = Date.now();
  const loops: number[] = [];
  const samples: CpuSample[] = [];
  const cpu = new CpuTotal();
  const sample = () => {
    const done = timesFiles.reduce((sum, file) => sum + readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 0);
    samples.push({ done, cpuMs: cpu.sample(loops) });
  };
  const sampler = setInterval(sample, 500);
  await Promise.all(
    timesFiles.map(
      (times, i) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn('bash', [script, remote, base, dir, String(i), String(perLoop), times, echoPath], { env, stdio: ['ignore', 'ignore', 'pipe'] });
          loops.push(child.pid!);
          let stderr = '';
          child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
          child.on('error', reject);
          child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`plain loop ${i} exited with ${code}: ${stderr.trim()}`))));
        }),
    ),
  ).finally(() => clearInterval(sampler));
  sample();
  const finishes = timesFiles.flatMap((file) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((line) => Number(line) * 1000));
  return rates(start, finishes.slice(0, jobs), window, countBranches(remote), cpuPerJob(samples, jobs, window));
}

async function loreleyRun(harness: Harness, jobs: number, window: number): Promise<Rates> {
  const experiment = await createExperiment(harness, {
    label: 'fullpath',
    commands: COMMANDS,
    env: {
      // The bench enqueues every job itself; the scheduler ingests, publishes its notes and prunes
      // finished jobs' branches after every tick, as in production, and schedules nothing more.
      SCHEDULER_MAX_TOTAL_JOBS: String(jobs),
      SCHEDULER_POLL_INTERVAL_SECONDS: '1',
      // Ingestion by the evaluator's metric: the repository-state embedding (its own benchmark)
      // would put the scheduler's CPU into the workers' figures on a small machine.
      MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics',
      MAPELITES_FEATURE_DIMENSIONS: 'score:0:2',
      MAPELITES_ARCHIVE_TYPE: 'grid',
      MAPELITES_ARCHIVE_CELLS_PER_DIM: '10',
      MAPELITES_FITNESS_METRIC: 'score',
    },
  });
  const procs: Proc[] = [];
  try {
    const env = experiment.env;
    const experimentId = experiment.settings.experiment.uuid;
    // As the scheduler's dispatch enqueues: the row, the queue send and the row marked queued, in
    // one transaction; parents are the root.
    await withTransaction(experiment.pool, async (client) => {
      const { rows } = await client.query<{ id: string }>(
        `INSERT INTO evolution_jobs (experiment_id, kind, base_commit, payload)
         SELECT $1, 'evolution', $2, jsonb_build_object('bench', i) FROM generate_series(1, $3) AS i RETURNING id`,
        [experimentId, experiment.baseCommit, jobs],
      );
      for (const row of rows) await markQueued(client, row.id, await sendEvolutionJob(experiment.boss, experiment.settings.queue.name, { id: row.id, priority: 0 }, client));
    });
    procs.push(harness.spawn('loreley scheduler', [LORELEY_BIN, 'scheduler'], { env, cwd: experiment.root }));
    for (let i = 0; i < WORKERS; i += 1) {
      procs.push(harness.spawn(`loreley worker ${i + 1}`, [LORELEY_BIN, 'worker', '--worker-id', `fullpath-${i + 1}`], { env, cwd: experiment.root }));
    }
    // The scheduler exits by itself once the budget is spent and ingested: watch a worker.
    const samples = await whileRunning(procs[1], watchProgress(harness, { experiment, procs, jobs }));
    const { rows } = await experiment.pool.query<{ created: number; started: number; finished: number }>(
      `SELECT extract(epoch FROM created_at)::float8 * 1000 AS created, extract(epoch FROM started_at)::float8 * 1000 AS started,
              extract(epoch FROM finished_at)::float8 * 1000 AS finished
         FROM evolution_jobs WHERE experiment_id = $1 AND kind <> 'baseline' AND status = 'succeeded'`,
      [experimentId],
    );
    const start = Math.min(...rows.map((row) => row.started));
    const waited = summary(rows.map((row) => row.started - row.created));
    const ran = summary(rows.map((row) => row.finished - row.started));
    harness.progress(`Loreley: job created → started p50 ${ms(waited.p50)} (p95 ${ms(waited.p95)}), started → result stored p50 ${ms(ran.p50)} (p95 ${ms(ran.p95)})`);
    // A job's own wall time early and late: growth here with a flat CPU per job is a wait inside
    // the job (a lock, the database); without it, the time went between jobs or to the machine.
    const byFinish = [...rows].sort((a, b) => a.finished - b.finished);
    const inJob = (slice: typeof rows) => ms(summary(slice.map((row) => row.finished - row.started)).p50);
    harness.progress(`Loreley: started → result stored p50, first ${window} jobs ${inJob(byFinish.slice(0, window))}, last ${window} ${inJob(byFinish.slice(-window))}`);
    // The scheduler's last tick publishes what was ingested last: give it a moment to prune.
    await Promise.all(procs.map((proc) => proc.stop(10_000)));
    return rates(start, rows.map((row) => row.finished), window, countBranches(experiment.remote), cpuPerJob(samples, jobs, window));
  } finally {
    await Promise.all(procs.map((proc) => proc.stop(1000).catch(() => undefined)));
    await experiment.close();
  }
}

/** No job finished for this long: a report of where every process is (LORELEY_BENCH_STALL_SECONDS). */
const STALL_MS = Number(process.env.LORELEY_BENCH_STALL_SECONDS ?? 60) * 1000;
/** Without LORELEY_BENCH_KEEP, a stall this long fails the run (it waits on with it: the processes stay up). */
const STALL_FAIL_MS = 300_000;

/**
 * Waits for every job to succeed, printing progress; fails at once when a job fails. When no job
 * finishes for STALL_MS, writes a stall report (stall-report.ts) into the run's directory and to
 * stderr; then fails after STALL_FAIL_MS, or, with LORELEY_BENCH_KEEP=1, keeps waiting with every
 * process left alive for inspection (Ctrl+C ends it; the directories are kept).
 */
async function watchProgress(harness: Harness, run: { experiment: Experiment; procs: readonly Proc[]; jobs: number }): Promise<CpuSample[]> {
  const { experiment, procs, jobs } = run;
  const samples: CpuSample[] = [];
  const roots = () => [...procs.map((proc) => proc.pid), ...[harness.postmasterPid()].filter((pid) => pid !== undefined)];
  const cpu = new CpuTotal();
  const experimentId = experiment.settings.experiment.uuid;
  let reported = 0;
  let lastDone = -1;
  let lastProgress = Date.now();
  let stallReported = false;
  const deadline = Date.now() + 3_600_000;
  for (;;) {
    const { rows } = await experiment.pool.query<{ done: number; failed: number; error: string | null }>(
      `SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS done, count(*) FILTER (WHERE status = 'failed')::int AS failed,
              max(last_error) AS error
         FROM evolution_jobs WHERE experiment_id = $1 AND kind <> 'baseline'`,
      [experimentId],
    );
    const { done, failed, error } = rows[0];
    samples.push({ done, cpuMs: cpu.sample(roots()) });
    if (failed > 0) throw new Error(`${failed} Loreley job(s) failed: ${error}`);
    if (done >= jobs) return samples;
    if (done >= reported + Math.max(100, jobs / 10)) {
      reported = done;
      harness.progress(`Loreley: ${done}/${jobs} jobs done`);
    }
    if (done > lastDone) {
      lastDone = done;
      lastProgress = Date.now();
      stallReported = false;
    }
    const still = Date.now() - lastProgress;
    if (!stallReported && still > STALL_MS) {
      stallReported = true;
      const report = await stallReport({
        pool: experiment.pool, experimentId, queueName: experiment.settings.queue.name, bossSchema: experiment.settings.database.bossSchema,
        procs, root: experiment.root, env: experiment.env,
      });
      const file = path.join(experiment.root, `stall-at-${done}.txt`);
      writeFileSync(file, report);
      process.stderr.write(report);
      harness.progress(
        `no job finished for ${Math.round(still / 1000)} s at ${done}/${jobs}: report above and in ${file}` +
          (harness.keep ? ' (LORELEY_BENCH_KEEP=1: processes left running for inspection; Ctrl+C to end)' : ''),
      );
    }
    if (!harness.keep && still > STALL_FAIL_MS) throw new Error(`stalled: no job finished for ${Math.round(still / 1000)} s at ${done}/${jobs} (stall report above)`);
    if (Date.now() > deadline) throw new Error(`${done}/${jobs} jobs done after an hour`);
    await sleep(500);
  }
}
