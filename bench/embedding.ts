import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { migrate } from '../src/shared/db/migrations/index.ts';
import { getFileEmbeddings, putFileEmbeddings } from '../src/shared/db/embeddings.ts';
import { createPool, type Pool } from '../src/shared/db/pool.ts';
import { readObjects } from '../src/shared/git.ts';
import { loadSettings } from '../src/shared/settings/index.ts';
import { HashedNgramEmbedder } from '../src/scheduler/embedding/embedder.ts';
import { RepositoryStateEmbedding } from '../src/scheduler/embedding/repository-state.ts';
import { SeededRandom } from '../src/scheduler/random.ts';
import { ms, ratio, summary, type Benchmark, type Row } from './harness.ts';

/**
 * The scheduler's repository-state embedding (src/scheduler/embedding/) of a 2,000-file
 * repository (≈ 3 KB of generated source each, 6 MB in all), in process against the run's
 * PostgreSQL, through `RepositoryStateEmbedding` exactly as ingestion calls it:
 *
 * - **full, cold**: a commit with no parent given and empty caches (file vectors and commit sums
 *   deleted, untimed, before each repetition): list the tree, read every blob, embed, store.
 *   Target ≤ 400 ms. Baseline, same run: the same reads and the same embedder with no cache at all
 *   (`git ls-tree` + one `git cat-file --batch` + `HashedNgramEmbedder.embed` in memory), i.e. the
 *   work itself; the ratio is what Loreley's bookkeeping adds.
 * - **full, warm file cache**: the same commit again with the file vectors cached (its sum
 *   deleted): what a commit whose parent is unknown costs once the files are known.
 * - **incremental**: a child commit changing one file (a new blob each repetition), parent given,
 *   warm cache; and one changing 20 files. Target: ≥ 20× faster than the cold full embedding.
 *
 * Medians of 7 repetitions (3 with --quick) after one warm-up.
 */

const FILES = 2000;
const DIMENSIONS = 256;

export const embedding: Benchmark = {
  name: 'embedding',
  description: 'full (cold) and incremental embedding of a 2,000-file repository',
  async run(harness) {
    const repetitions = harness.pick(7, 3);
    const root = harness.tempDir('embedding');
    const repository = path.join(root, 'repo');
    harness.progress(`writing a ${FILES.toLocaleString('en')}-file repository`);
    const { base, oneFile, twentyFiles, bytes } = buildRepository(repository, repetitions + 1);
    harness.progress(`${(bytes / 1e6).toFixed(1)} MB in ${FILES} files; ${oneFile.length} one-file and ${twentyFiles.length} twenty-file children`);

    const databaseUrl = await harness.createDatabase('embedding');
    const settings = loadSettings({
      env: {
        EXPERIMENT_ID: `bench-embedding-${process.pid}`, DATABASE_URL: databaseUrl, WORKER_REPO_REMOTE_URL: repository,
        WORKER_REPO_WORKTREE: path.join(root, 'clone'), WORKER_AGENT_COMMAND: 'true', WORKER_EVALUATOR_COMMAND: 'true',
        LORELEY_DATA_DIR: path.join(root, 'data'), LOGS_BASE_DIR: root, LOG_CONSOLE: 'false', MAPELITES_EMBEDDING_DIMENSIONS: String(DIMENSIONS),
      },
      dotenv: false,
      cwd: root,
    });
    const pool = createPool({ url: databaseUrl, settings: settings.database, applicationName: 'loreley-bench', max: 2 });
    try {
      await migrate(pool, settings.database.schema);
      const experimentId = settings.experiment.uuid;
      const embedder = new HashedNgramEmbedder(DIMENSIONS);
      const state = new RepositoryStateEmbedding({ db: pool, experimentId, repository, embedder, settings: settings.archive.embedding });

      const timed = async (label: string, prepare: () => Promise<void>, run: () => Promise<unknown>): Promise<number> => {
        const times: number[] = [];
        for (let i = 0; i <= repetitions; i++) {
          await prepare();
          const started = performance.now();
          await run();
          if (i > 0) times.push(performance.now() - started);
        }
        const p50 = summary(times).p50;
        harness.progress(`${label}: p50 ${ms(p50)} (${times.map((t) => t.toFixed(0)).join(', ')} ms)`);
        return p50;
      };

      const baselineMs = await timed('baseline: ls-tree + cat-file --batch + embed in memory', async () => undefined, async () => {
        const blobs = lsTree(repository, base);
        const contents = await readObjects(repository, blobs);
        await embedder.embed(blobs.map((blob) => contents.get(blob)!.toString('utf8')));
      });
      // Where a cold embedding's time goes: its parts alone, on the same data.
      const blobs = lsTree(repository, base);
      const texts = [...(await readObjects(repository, blobs)).values()].map((content) => content.toString('utf8'));
      const vectors = await embedder.embed(texts);
      const byBlob = new Map(blobs.map((blob, index) => [blob, vectors[index]]));
      await timed('part: embed in memory', async () => undefined, () => embedder.embed(texts));
      await timed('part: store 2,000 file vectors', () => pool.query('DELETE FROM file_embeddings').then(() => undefined), () => putFileEmbeddings(pool, embedder.id, byBlob));
      await timed('part: read 2,000 file vectors', async () => undefined, () => getFileEmbeddings(pool, embedder.id, blobs));
      const clearAll = async () => {
        await pool.query('DELETE FROM file_embeddings');
        await pool.query('DELETE FROM commit_embeddings');
      };
      const coldMs = await timed('full, cold', clearAll, () => state.embedding(base));
      const clearSum = (commit: string) => async () => {
        await pool.query('DELETE FROM commit_embeddings WHERE commit_hash = $1', [commit]);
      };
      const warmMs = await timed('full, warm file cache', clearSum(base), () => state.embedding(base));
      let next = 0;
      const oneMs = await timed('incremental, 1 file changed', async () => undefined, () => state.embedding(oneFile[next++], base));
      next = 0;
      const twentyMs = await timed('incremental, 20 files changed', async () => undefined, () => state.embedding(twentyFiles[next++], base));
      await checkIncremental(state, pool, oneFile[0], base);

      const rows: Row[] = [
        {
          benchmark: `embedding, full, cold cache, ${FILES.toLocaleString('en')} files`,
          loreley: ms(coldMs),
          baseline: `read + embed, no cache ${ms(baselineMs)}`,
          ratio: ratio(coldMs, baselineMs),
          target: '≤ 400 ms',
          pass: coldMs <= 400,
        },
        {
          benchmark: 'embedding, full, warm file cache',
          loreley: ms(warmMs),
          baseline: `read + embed, no cache ${ms(baselineMs)}`,
          ratio: ratio(warmMs, baselineMs),
          target: '',
          pass: undefined,
        },
        {
          benchmark: 'embedding, incremental, 1 file changed',
          loreley: ms(oneMs),
          baseline: `full, cold ${ms(coldMs)}`,
          ratio: ratio(oneMs, coldMs),
          target: '≥ 20× faster (≤ 0.05×)',
          pass: oneMs * 20 <= coldMs,
        },
        {
          benchmark: 'embedding, incremental, 20 files changed',
          loreley: ms(twentyMs),
          baseline: `full, cold ${ms(coldMs)}`,
          ratio: ratio(twentyMs, coldMs),
          target: '',
          pass: undefined,
        },
      ];
      return rows;
    } finally {
      await pool.end();
    }
  },
};

/** The incremental sum must equal the full one exactly (file vectors are on a 2^-24 grid). */
async function checkIncremental(state: RepositoryStateEmbedding, pool: Pool, child: string, parent: string): Promise<void> {
  const incremental = await state.embedding(child, parent);
  await pool.query('DELETE FROM commit_embeddings WHERE commit_hash = $1', [child]);
  const full = await state.embedding(child);
  if (full.fileCount !== incremental.fileCount || full.vectorSum.some((value, i) => value !== incremental.vectorSum[i])) {
    throw new Error(`the incremental embedding of ${child} differs from the full one`);
  }
}

/** The blob of every file of a commit, from one `git ls-tree`. */
function lsTree(directory: string, commit: string): string[] {
  const out = execFileSync('git', ['ls-tree', '-r', '-z', commit], { cwd: directory, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out.split('\0').filter(Boolean).map((record) => record.split('\t')[0].split(' ')[2]);
}

const WORDS = ['value', 'count', 'index', 'buffer', 'result', 'node', 'state', 'queue', 'item', 'size', 'offset', 'length', 'total', 'score', 'point', 'radius', 'cache', 'entry', 'limit', 'weight'];

/** A source file of 60–120 lines of plausible code: identifiers, numbers, operators. */
function sourceFile(random: SeededRandom, id: number): string {
  const word = () => WORDS[random.int(WORDS.length)];
  const lines = [`// module ${id}`, `export function ${word()}${id}(${word()}, ${word()}) {`];
  const count = 60 + random.int(60);
  for (let i = 0; i < count; i++) {
    const pick = random.int(4);
    if (pick === 0) lines.push(`  const ${word()}${i} = ${word()} * ${(random.next() * 100).toFixed(3)} + ${random.int(1000)};`);
    else if (pick === 1) lines.push(`  if (${word()}${i % 7} > ${word()}.${word()}) { ${word()} += ${random.int(64)}; }`);
    else if (pick === 2) lines.push(`  for (let i = 0; i < ${word()}.length; i++) ${word()}[i] = Math.max(${word()}[i], ${random.int(10)});`);
    else lines.push(`  ${word()}.${word()}(${word()}, '${word()}-${random.int(100)}');`);
  }
  lines.push('  return value;', '}', '');
  return lines.join('\n');
}

/**
 * Writes the repository: the base commit with FILES files, then children of it, each changing one
 * file (or twenty) with content no other commit has, so every repetition embeds new blobs.
 */
function buildRepository(directory: string, children: number): { base: string; oneFile: string[]; twentyFiles: string[]; bytes: number } {
  const random = new SeededRandom(12);
  mkdirSync(directory, { recursive: true });
  const git = (...args: string[]) =>
    execFileSync('git', args, { cwd: directory, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' } }).trim();
  git('init', '--quiet', '--initial-branch=main');
  let bytes = 0;
  const names: string[] = [];
  for (let i = 0; i < FILES; i++) {
    const name = path.join(`pkg${i % 40}`, `module${i}.js`);
    mkdirSync(path.join(directory, path.dirname(name)), { recursive: true });
    const text = sourceFile(random, i);
    bytes += text.length;
    writeFileSync(path.join(directory, name), text);
    names.push(name);
  }
  git('add', '--all');
  git('commit', '--quiet', '-m', 'base');
  const base = git('rev-parse', 'HEAD');
  const child = (changed: number, label: string): string => {
    for (let k = 0; k < changed; k++) writeFileSync(path.join(directory, names[random.int(FILES)]), sourceFile(random, FILES + random.int(1_000_000)));
    git('add', '--all');
    git('commit', '--quiet', '-m', label);
    const commit = git('rev-parse', 'HEAD');
    git('reset', '--quiet', '--hard', base);
    return commit;
  };
  const oneFile = Array.from({ length: children }, (_, i) => child(1, `one ${i}`));
  const twentyFiles = Array.from({ length: children }, (_, i) => child(20, `twenty ${i}`));
  // Packed, as a scheduler's clone holds what it fetched.
  git('repack', '-a', '-d', '-q');
  return { base, oneFile, twentyFiles, bytes };
}
