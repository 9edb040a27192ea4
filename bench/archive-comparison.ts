/**
 * Grid against CVT archive on the bundled circle-packing example with the offline mutation
 * operator: the real archive (MapElitesArchive on PostgreSQL, the embedding descriptor with the
 * offline embedder and the PCA, the real sampler), the real operator and evaluator as processes,
 * real git commits. Only the queue and the worker processes are left out: jobs run one at a time
 * (sample a parent, mutate, commit, evaluate, ingest), so a run is a pure function of its seed.
 *
 *   node bench/archive-comparison.ts [--seeds 10] [--jobs 100] [--parallel 2] [--types grid,cvt]
 *
 * Each (type, seed) run uses MAPELITES_SAMPLER_SEED=seed and gives the operator the same job
 * identity per job index (its random draws), so the two archive types are compared on paired
 * runs. Prints one JSON line per run on stderr as it ends, then a Markdown table on stdout: best
 * combined_score after 40, 60 and 100 jobs (median and range over the seeds) and the archive's
 * coverage and elites after 60 jobs. CPU-heavy (three node processes per job): run it on a quiet
 * machine.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import pLimit from 'p-limit';
import { MapElitesArchive } from '../src/scheduler/archive/archive.ts';
import { EmbeddingDescriptor } from '../src/scheduler/archive/descriptor.ts';
import { HashedNgramEmbedder } from '../src/scheduler/embedding/embedder.ts';
import { RepositoryStateEmbedding } from '../src/scheduler/embedding/repository-state.ts';
import { SeededRandom } from '../src/scheduler/random.ts';
import { sample } from '../src/scheduler/sampler.ts';
import { listElites } from '../src/shared/db/archive.ts';
import { ensureExperiment } from '../src/shared/db/experiments.ts';
import { getJob, insertJob, markRunning, markSucceeded } from '../src/shared/db/jobs.ts';
import { migrate } from '../src/shared/db/migrations/index.ts';
import { createPool, withTransaction, type Pool } from '../src/shared/db/pool.ts';
import { upsertMetrics } from '../src/shared/db/results.ts';
import { startEmbeddedDatabase } from '../src/shared/embedded-database.ts';
import { loadSettings, type Settings } from '../src/shared/settings/index.ts';
import { parseEvaluation } from '../src/worker/evaluator.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const EXAMPLE = path.join(ROOT, 'examples', 'circle-packing');
const CHECKPOINTS = [40, 60, 100];

const { values: flags } = parseArgs({
  options: {
    seeds: { type: 'string', default: '10' },
    jobs: { type: 'string', default: '100' },
    parallel: { type: 'string', default: '2' },
    types: { type: 'string', default: 'grid,cvt' },
  },
});
const seeds = Number(flags.seeds);
const jobs = Number(flags.jobs);
const types = flags.types!.split(',').map((t) => t.trim()) as Array<'grid' | 'cvt'>;

interface RunResult {
  readonly type: string;
  readonly seed: number;
  readonly baseline: number;
  /** Best combined_score after each checkpoint (jobs done). */
  readonly best: Record<number, number>;
  readonly elites: Record<number, number>;
  readonly coverage: Record<number, number>;
  readonly cells: number;
  readonly seconds: number;
}

const run_ = promisify(execFile);
const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: 'bench', GIT_AUTHOR_EMAIL: 'bench@localhost', GIT_COMMITTER_NAME: 'bench', GIT_COMMITTER_EMAIL: 'bench@localhost' };

/** Asynchronous, so the runs in parallel overlap their processes. */
async function git(cwd: string, ...args: string[]): Promise<string> {
  return (await run_('git', args, { cwd, encoding: 'utf8', env: GIT_ENV })).stdout.trim();
}

async function node(cwd: string, script: string, env: Record<string, string> = {}): Promise<string> {
  return (await run_(process.execPath, [script], { cwd, encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, timeout: 120_000 })).stdout;
}

async function evaluate(work: string): Promise<Record<string, number>> {
  const { metrics } = parseEvaluation(await node(work, path.join(EXAMPLE, 'tools', 'evaluate.js')));
  return Object.fromEntries(metrics.map((m) => [m.name, m.value]));
}

async function complete(pool: Pool, settings: Settings, jobId: string, commit: string, metrics: Record<string, number>): Promise<void> {
  const attempt = crypto.randomUUID();
  await withTransaction(pool, async (client) => {
    await markRunning(client, jobId, { workerId: 'bench', host: 'bench', queueJobId: attempt });
    await upsertMetrics(client, settings.experiment.uuid, commit, jobId, Object.entries(metrics).map(([name, value]) => ({ name, value })));
    await markSucceeded(client, jobId, attempt, commit);
  });
}

async function run(url: string, type: 'grid' | 'cvt', seed: number): Promise<RunResult> {
  const started = performance.now();
  const dir = mkdtempSync(path.join(os.tmpdir(), `loreley-archive-bench-${type}-${seed}-`));
  try {
    const work = path.join(dir, 'work');
    await git(dir, 'init', '--quiet', '--initial-branch=main', work);
    copyFileSync(path.join(EXAMPLE, 'program', 'pack.js'), path.join(work, 'pack.js'));
    await git(work, 'add', '--all');
    await git(work, 'commit', '--quiet', '-m', 'initial');
    const root = await git(work, 'rev-parse', 'HEAD');
    const settings = loadSettings({
      dotenv: false,
      cwd: dir,
      env: {
        EXPERIMENT_ID: `archive-bench-${type}-${seed}`, DATABASE_URL: url, WORKER_REPO_REMOTE_URL: work, WORKER_EVALUATOR_COMMAND: 'true', WORKER_AGENT_COMMAND: 'true',
        MAPELITES_ARCHIVE_TYPE: type, MAPELITES_SAMPLER_SEED: String(seed), MAPELITES_FITNESS_METRIC: 'combined_score', LOG_CONSOLE: 'false',
      },
    });
    const pool = createPool({ url, settings: settings.database, applicationName: 'archive-bench' });
    try {
      await ensureExperiment(pool, settings.experiment);
      const experimentId = settings.experiment.uuid;
      const state = new RepositoryStateEmbedding({
        db: pool, experimentId, repository: work, embedder: new HashedNgramEmbedder(settings.archive.embedding.dimensions), settings: settings.archive.embedding,
      });
      const archive = new MapElitesArchive({
        pool, experimentId, settings: settings.archive, descriptor: new EmbeddingDescriptor(settings.archive, state, undefined), seed,
      });
      await archive.open();
      const random = new SeededRandom(seed);

      const baselineMetrics = await evaluate(work);
      const baselineJob = await insertJob(pool, { experimentId, kind: 'baseline', baseCommit: root });
      await complete(pool, settings, baselineJob.id, root, baselineMetrics);
      await archive.ingest((await getJob(pool, baselineJob.id))!);

      let best = baselineMetrics.combined_score;
      const result: RunResult = { type, seed, baseline: best, best: {}, elites: {}, coverage: {}, cells: archive.tessellation.cellCount, seconds: 0 };
      for (let index = 1; index <= jobs; index++) {
        const elites = await listElites(pool, experimentId, 0);
        const own = elites.filter((elite) => elite.source !== 'baseline');
        // As the scheduler does: seeds from the root while only the baseline is in, then sampled parents.
        const picked = own.length === 0 ? undefined : sample(elites, settings.archive.inspirationCount, settings.archive.neighborMaxRadius, random, (a, b) => archive.tessellation.ringDistance(a, b));
        const parent = picked?.base.commitHash ?? root;
        await git(work, 'checkout', '--quiet', '--detach', parent);
        await node(work, path.join(EXAMPLE, 'tools', 'perturb-centers.js'), { LORELEY_JOB_ID: `bench-${seed}-${index}` });
        await git(work, 'commit', '--quiet', '-am', `job ${index}`);
        const commit = await git(work, 'rev-parse', 'HEAD');
        const metrics = await evaluate(work);
        const job = await insertJob(pool, { experimentId, baseCommit: parent });
        await complete(pool, settings, job.id, commit, metrics);
        await archive.ingest((await getJob(pool, job.id))!);
        best = Math.max(best, metrics.combined_score);
        if (CHECKPOINTS.includes(index)) {
          const coverage = await archive.coverage();
          result.best[index] = best;
          result.elites[index] = coverage.elites;
          result.coverage[index] = coverage.coverage;
        }
      }
      const done = { ...result, seconds: Math.round((performance.now() - started) / 100) / 10 };
      process.stderr.write(`${JSON.stringify(done)}\n`);
      return done;
    } finally {
      await pool.end();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function stat(values: number[], digits = 4): string {
  if (values.length === 0) return '—';
  return `${median(values).toFixed(digits)} [${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)}]`;
}

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'loreley-archive-bench-pg-'));
const database = await startEmbeddedDatabase({ directory: dataDir });
let exitCode = 0;
try {
  const url = database.url;
  const setupPool = createPool({ url, settings: { url, schema: 'loreley', bossSchema: 'pgboss', poolMax: 2 }, applicationName: 'archive-bench' });
  await migrate(setupPool, 'loreley');
  await setupPool.end();
  const limit = pLimit(Number(flags.parallel));
  const started = performance.now();
  const runs = await Promise.all(types.flatMap((type) => Array.from({ length: seeds }, (_, seed) => limit(() => run(url, type, seed + 1)))));
  process.stderr.write(`archive bench: ${runs.length} runs of ${jobs} jobs in ${Math.round((performance.now() - started) / 1000)} s\n`);
  const checkpoints = CHECKPOINTS.filter((c) => c <= jobs);
  const lines = [
    `| archive | cells | ${checkpoints.map((c) => `best after ${c} jobs`).join(' | ')} | coverage after 60 | elites after 60 |`,
    `| --- | --- | ${checkpoints.map(() => '---').join(' | ')} | --- | --- |`,
  ];
  for (const type of types) {
    const mine = runs.filter((r) => r.type === type);
    lines.push(`| ${type} | ${mine[0]?.cells ?? '?'} | ${checkpoints.map((c) => stat(mine.map((r) => r.best[c]))).join(' | ')} | ${stat(mine.map((r) => 100 * (r.coverage[60] ?? NaN)).filter(Number.isFinite), 2)} % | ${stat(mine.map((r) => r.elites[60]).filter((x) => x !== undefined), 0)} |`);
  }
  lines.push('', `baseline combined_score ${runs[0]?.baseline.toFixed(4)}; ${seeds} seeds (MAPELITES_SAMPLER_SEED 1–${seeds}), median [min–max]`);
  process.stdout.write(`${lines.join('\n')}\n`);
} catch (error) {
  process.stderr.write(`archive bench failed: ${(error as Error).stack ?? String(error)}\n`);
  exitCode = 1;
} finally {
  await database.remove().catch(() => undefined);
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(exitCode);
