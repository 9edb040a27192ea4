/**
 * Grid against CVT archive on the bundled circle-packing example with the offline mutation
 * operator: the real archive (MapElitesArchive on PostgreSQL, the embedding descriptor with the
 * offline embedder and the PCA, the real sampler) over real git commits. Only the queue and the
 * worker processes are left out: jobs run one at a time (sample a parent, mutate, commit,
 * evaluate, ingest), so a run is a pure function of its seed.
 *
 * To be cheap enough for 2000 jobs on a shared 2-core machine, the bundled scripts run inside this
 * process instead of as three node processes per job: the operator (tools/perturb-centers.js) and
 * the program (program/pack.js) are the shipped files, run unchanged in a `vm` context with their
 * file and output calls pointed at memory; the evaluator's checks are tools/evaluate.js's (same
 * tolerance, same reference sum), and commits are written as loose git objects.
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
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import vm from 'node:vm';
import { deflateSync } from 'node:zlib';
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

const OPERATOR_SOURCE = readFileSync(path.join(EXAMPLE, 'tools', 'perturb-centers.js'), 'utf8').replace(/^import .*$/gm, '');
const OPERATOR = new vm.Script(OPERATOR_SOURCE, { filename: 'perturb-centers.js' });

/** tools/perturb-centers.js on `source` as pack.js, seeded by `jobId` as the worker's LORELEY_JOB_ID. */
function mutate(source: string, jobId: string): string {
  let written = source;
  OPERATOR.runInNewContext({
    readFileSync: () => source,
    writeFileSync: (_file: string, text: string) => (written = text),
    createHash,
    process: { env: { LORELEY_JOB_ID: jobId }, stdout: { write: () => true }, stderr: { write: () => true }, exit: (code: number) => { throw new Error(`operator exited ${code}`); } },
  });
  return written;
}

// tools/evaluate.js's constants and checks.
const N = 26;
const TOLERANCE = 1e-9;
const REFERENCE_SUM = 2.635;

function check(circles: unknown): string | undefined {
  if (!Array.isArray(circles) || circles.length !== N) return `expected ${N} circles`;
  for (const [index, circle] of circles.entries()) {
    if (!Array.isArray(circle) || circle.length !== 3 || !circle.every((v) => typeof v === 'number' && Number.isFinite(v))) return `circle ${index} is not three finite numbers`;
    const [x, y, r] = circle as number[];
    if (!(r > 0)) return `circle ${index} has radius ${r}`;
    if (x - r < -TOLERANCE || x + r > 1 + TOLERANCE || y - r < -TOLERANCE || y + r > 1 + TOLERANCE) return `circle ${index} leaves the unit square`;
  }
  for (let i = 0; i < N; i += 1) {
    for (let j = i + 1; j < N; j += 1) {
      const [xi, yi, ri] = circles[i] as number[];
      const [xj, yj, rj] = circles[j] as number[];
      if (Math.hypot(xi - xj, yi - yj) < ri + rj - TOLERANCE) return `circles ${i} and ${j} overlap`;
    }
  }
  return undefined;
}

/** program/pack.js run as tools/evaluate.js runs it, then its metrics. */
function evaluate(source: string): Record<string, number> {
  let output = '';
  try {
    vm.runInNewContext(source, { process: { stdout: { write: (text: string) => (output += text) } } }, { timeout: 10_000 });
    const circles = (JSON.parse(output) as { circles: unknown }).circles;
    const problem = check(circles);
    const sum = problem ? 0 : (circles as number[][]).reduce((total, [, , r]) => total + r, 0);
    return { sum_radii: sum, validity: problem ? 0 : 1, combined_score: problem ? 0 : sum / REFERENCE_SUM };
  } catch {
    return { sum_radii: 0, validity: 0, combined_score: 0 };
  }
}

/** Writes a loose git object and returns its id: no process per commit. */
function writeObject(gitDir: string, type: string, body: Buffer): string {
  const raw = Buffer.concat([Buffer.from(`${type} ${body.length}\0`), body]);
  const id = createHash('sha1').update(raw).digest('hex');
  const dir = path.join(gitDir, 'objects', id.slice(0, 2));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, id.slice(2)), deflateSync(raw));
  return id;
}

let clock = 1_700_000_000;

/** A commit of `pack.js` with `parent`, written straight into the repository. */
function commitPack(gitDir: string, source: string, parent: string | undefined, message: string): string {
  const blob = writeObject(gitDir, 'blob', Buffer.from(source));
  const tree = writeObject(gitDir, 'tree', Buffer.concat([Buffer.from('100644 pack.js\0'), Buffer.from(blob, 'hex')]));
  const who = `bench <bench@localhost> ${clock++} +0000`;
  return writeObject(gitDir, 'commit', Buffer.from(`tree ${tree}\n${parent ? `parent ${parent}\n` : ''}author ${who}\ncommitter ${who}\n\n${message}\n`));
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
    await git(dir, 'init', '--quiet', '--bare', work);
    const sources = new Map<string, string>();
    const rootSource = readFileSync(path.join(EXAMPLE, 'program', 'pack.js'), 'utf8');
    const root = commitPack(work, rootSource, undefined, 'initial');
    sources.set(root, rootSource);
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

      const baselineMetrics = evaluate(rootSource);
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
        const source = mutate(sources.get(parent)!, `bench-${seed}-${index}`);
        const commit = commitPack(work, source, parent, `job ${index}`);
        sources.set(commit, source);
        const metrics = evaluate(source);
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
