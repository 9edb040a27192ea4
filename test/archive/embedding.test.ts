import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MapElitesArchive } from '../../src/scheduler/archive/archive.ts';
import { EmbeddingDescriptor } from '../../src/scheduler/archive/descriptor.ts';
import { cellKey, cellOf } from '../../src/scheduler/archive/grid.ts';
import { isWhitenedPca } from '../../src/scheduler/archive/projection.ts';
import { HashedNgramEmbedder } from '../../src/scheduler/embedding/embedder.ts';
import { IgnoreRules } from '../../src/scheduler/embedding/ignore.ts';
import { RepositoryStateEmbedding } from '../../src/scheduler/embedding/repository-state.ts';
import { getArchiveState, listElites } from '../../src/shared/db/archive.ts';
import { getJob, insertJob } from '../../src/shared/db/jobs.ts';
import { cloneOrFetch } from '../../src/shared/git.ts';
import { stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { completeJob, createFixture, pushCommit, type Fixture } from '../scheduler/fixture.ts';

after(() => stopTestServer());

const FILES = {
  'main.js': 'export function pack(n) { const radius = 0.1; return Array.from({ length: n }, () => radius); }\n',
  'lib/util.js': 'export const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi);\n',
  'README.md': '# not code: the extension is not allowed\n',
  'ignored/generated.js': 'export const generated = true;\n',
  '.loreleyignore': 'ignored/\n',
};

describe('ignore rules', () => {
  test('follow gitignore semantics for the supported subset', () => {
    const rules = new IgnoreRules(['# comment\nbuild/\n*.log\n/top.js\n!keep.log\nsrc/**/gen_*.ts\n']);
    assert.ok(rules.ignores('build/x.js'));
    assert.ok(rules.ignores('a/build/x.js'));
    assert.ok(rules.ignores('x.log'));
    assert.ok(!rules.ignores('keep.log'));
    assert.ok(rules.ignores('top.js'));
    assert.ok(!rules.ignores('a/top.js'));
    assert.ok(rules.ignores('src/a/b/gen_x.ts'));
    assert.ok(rules.ignores('src/gen_x.ts'));
    assert.ok(!rules.ignores('src/a/x.ts'));
  });
});

describe('repository-state embedding', () => {
  let fixture: Fixture;
  let clone: string;
  before(async () => {
    fixture = await createFixture({ files: FILES });
    clone = path.join(tempDir(), 'scheduler-clone');
    await cloneOrFetch(fixture.remote, clone);
  });
  after(() => fixture.close());

  const state = (experimentId: string, maxFileBytes = 1000) =>
    new RepositoryStateEmbedding({
      db: fixture.pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64),
      settings: { extensions: ['.js'], maxFileBytes, dimensions: 64 },
    });

  test('a child updated from its parent by the diff equals a full recomputation', async () => {
    const child = pushCommit(fixture.remote, fixture.rootCommit, {
      'main.js': FILES['main.js'].replace('0.1', '0.25'),
      'lib/util.js': null,
      'lib/new.js': 'export const lerp = (a, b, t) => a + (b - a) * t;\n',
      'ignored/more.js': 'export const alsoIgnored = 1;\n',
      'big.js': `export const big = "${'x'.repeat(2000)}";\n`,
      'data.js': 'binary\0content',
    }, 'child');
    await cloneOrFetch(fixture.remote, clone);

    const incremental = state('11111111-1111-1111-1111-111111111111');
    const parentEmbedding = await incremental.embedding(fixture.rootCommit);
    assert.equal(parentEmbedding.fileCount, 2, 'main.js and lib/util.js count; README.md and ignored/ do not');
    const before = (await fixture.pool.query('SELECT count(*)::int AS n FROM file_embeddings')).rows[0].n;
    const childEmbedding = await incremental.embedding(child, fixture.rootCommit);
    const after = (await fixture.pool.query('SELECT count(*)::int AS n FROM file_embeddings')).rows[0].n;
    assert.equal(childEmbedding.fileCount, 2, 'main.js and lib/new.js; big.js is over the cap and data.js is binary');
    // Only the changed blobs were embedded: main.js, lib/new.js and the binary marker for data.js.
    assert.equal(after - before, 3);

    const full = await state('22222222-2222-2222-2222-222222222222').embedding(child);
    assert.equal(full.fileCount, childEmbedding.fileCount);
    full.vectorSum.forEach((value, i) => assert.ok(Math.abs(value - childEmbedding.vectorSum[i]) < 1e-9));
    // Exactly, not just closely: file vectors are on a 2^-24 grid, so no rounding depends on the path.
    assert.deepEqual(full.vectorSum, childEmbedding.vectorSum);
    assert.notDeepEqual(await incremental.vector(child), await incremental.vector(fixture.rootCommit));
  });

  test('a diff that changes an ignore file recomputes the commit from its tree', async () => {
    const child = pushCommit(fixture.remote, fixture.rootCommit, { '.loreleyignore': 'lib/\n' }, 'ignore-change');
    await cloneOrFetch(fixture.remote, clone);
    const embedding = await state('33333333-3333-3333-3333-333333333333').embedding(child, fixture.rootCommit);
    const full = await state('44444444-4444-4444-4444-444444444444').embedding(child);
    assert.equal(embedding.fileCount, 2, 'main.js and ignored/generated.js, now that ignored/ is no longer ignored');
    assert.deepEqual(embedding.vectorSum, full.vectorSum);
    const parent = await state('33333333-3333-3333-3333-333333333333').embedding(fixture.rootCommit);
    assert.notDeepEqual(embedding.vectorSum, parent.vectorSum, 'lib/util.js left the sum and ignored/generated.js joined it');
  });
});

describe('PCA refit', () => {
  let fixture: Fixture;
  before(async () => {
    fixture = await createFixture({
      files: FILES,
      env: {
        MAPELITES_BEHAVIOR_DESCRIPTOR: 'embedding',
        MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS: '2',
        MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES: '4',
        MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL: '3',
        MAPELITES_ARCHIVE_CELLS_PER_DIM: '6',
        MAPELITES_EMBEDDING_DIMENSIONS: '64',
      },
    });
  });
  after(() => fixture.close());

  test('fits after MIN_FIT_SAMPLES vectors, refits every REFIT_INTERVAL ingestions and re-projects stored elites', async () => {
    const { settings, pool } = fixture;
    const experimentId = settings.experiment.uuid;
    const clone = path.join(tempDir(), 'clone');
    await cloneOrFetch(fixture.remote, clone);
    const embedding = new RepositoryStateEmbedding({ db: pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64), settings: settings.archive.embedding });
    const descriptor = new EmbeddingDescriptor(settings.archive, embedding, undefined);
    const archive = new MapElitesArchive({
      pool, experimentId, settings: settings.archive, descriptor, seed: 1,
      ensureCommit: () => cloneOrFetch(fixture.remote, clone).then(() => undefined),
    });
    await archive.open();

    const variants = [
      'const radius = 0.3; const grid = 5;',
      'function spiral(k) { return k * 0.01; } const turns = 7;',
      'const angles = [0, 1, 2, 3].map((a) => a * Math.PI / 2);',
      'class Packer { constructor() { this.best = null; } }',
      'for (let i = 0; i < 26; i++) { console.log(i * i); }',
      'export const jitter = Math.random() * 1e-3; let temperature = 100;',
    ];
    const ingest = async (i: number) => {
      const commit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `${FILES['main.js']}${variants[i]}\n` }, `v${i}`);
      const job = await insertJob(pool, { experimentId, baseCommit: fixture.rootCommit });
      await completeJob(pool, experimentId, job.id, commit, { combined_score: i / 10 });
      return archive.ingest((await getJob(pool, job.id))!);
    };

    const first = await ingest(0);
    const second = await ingest(1);
    assert.equal(first.refit, undefined);
    assert.equal(second.refit, undefined);
    assert.equal(descriptor.projection, undefined, 'root + 2 children: too few samples to fit');
    const beforeRefit = await listElites(pool, experimentId);

    const third = await ingest(2);
    assert.ok(third.refit, 'the fourth vector (root + 3 children) triggers the first fit');
    assert.equal(third.refit.samples, 4);
    assert.equal(third.refit.elites, beforeRefit.length + (third.status === 'ingested' ? 1 : 0));
    const state = await getArchiveState(pool, experimentId);
    assert.ok(isWhitenedPca(state?.projection));
    assert.equal(state.projectionFittedAt, 3);

    // Every stored elite now sits where the fitted projection puts its commit.
    const model = descriptor.projection!;
    const elites = await listElites(pool, experimentId);
    assert.equal(elites.length, third.refit.elites - third.refit.dropped);
    for (const elite of elites) {
      const expected = descriptor.project(await embedding.vector(elite.commitHash), model);
      elite.descriptor.forEach((value, i) => assert.ok(Math.abs(value - expected[i]) < 1e-9));
      assert.equal(elite.cellKey, cellKey(cellOf(expected, settings.archive.cellsPerDim)));
    }
    const moved = beforeRefit.filter((old) => {
      const now = elites.find((e) => e.commitHash === old.commitHash);
      return !now || now.descriptor.some((value, i) => Math.abs(value - old.descriptor[i]) > 1e-9);
    });
    assert.equal(moved.length, beforeRefit.length, 'the elites placed under the fallback projection were re-projected');

    assert.equal((await ingest(3)).refit, undefined);
    assert.equal((await ingest(4)).refit, undefined);
    const sixth = await ingest(5);
    assert.ok(sixth.refit, 'refitted REFIT_INTERVAL ingestions after the first fit');
    assert.equal(sixth.refit.samples, 7);
    assert.equal((await getArchiveState(pool, experimentId))?.projectionFittedAt, 6);
  });
});
