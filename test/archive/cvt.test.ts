import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MapElitesArchive } from '../../src/scheduler/archive/archive.ts';
import { CvtTessellation, fitCentroids, GridTessellation } from '../../src/scheduler/archive/cvt.ts';
import { EmbeddingDescriptor, MetricsDescriptor } from '../../src/scheduler/archive/descriptor.ts';
import { HashedNgramEmbedder } from '../../src/scheduler/embedding/embedder.ts';
import { RepositoryStateEmbedding } from '../../src/scheduler/embedding/repository-state.ts';
import { selectInspirations } from '../../src/scheduler/sampler.ts';
import { SeededRandom } from '../../src/scheduler/random.ts';
import { countCommitEmbeddings, getArchiveState, listElites } from '../../src/shared/db/archive.ts';
import { getJob, insertJob } from '../../src/shared/db/jobs.ts';
import { cloneOrFetch } from '../../src/shared/git.ts';
import { stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { completeJob, createFixture, pushCommit, type Fixture } from '../scheduler/fixture.ts';

/** The centroidal archive (CVT-MAP-Elites): a fixed number of cells, whatever the dimensions. */

after(() => stopTestServer());

describe('centroidal Voronoi tessellation', () => {
  test('the same seed gives the same centroids; every point has its nearest centroid as cell', () => {
    const a = fitCentroids(50, 4, 1234, { normalSd: 1 / 6 });
    const b = fitCentroids(50, 4, 1234, { normalSd: 1 / 6 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, fitCentroids(50, 4, 99, { normalSd: 1 / 6 }));
    assert.equal(a.length, 50);
    assert.ok(a.every((c) => c.length === 4 && c.every((x) => x >= 0 && x <= 1)));
    const cvt = new CvtTessellation(a);
    assert.equal(cvt.cellCount, 50);
    const random = new SeededRandom(7);
    for (let i = 0; i < 200; i++) {
      const point = [random.next(), random.next(), random.next(), random.next()];
      const [cell] = cvt.cellOf(point);
      const d = (c: number[]) => c.reduce((sum, x, k) => sum + (x - point[k]) ** 2, 0);
      assert.ok(a.every((c) => d(c) >= d(a[cell]) - 1e-12));
    }
    // Cells are used about evenly by points from the model the centroids were fitted for.
    const counts = new Array<number>(50).fill(0);
    for (let i = 0; i < 5000; i++) counts[cvt.cellOf(Array.from({ length: 4 }, () => Math.min(1, Math.max(0, 0.5 + random.normal() / 6))))[0]] += 1;
    assert.ok(counts.filter((n) => n > 0).length >= 45, `most cells are used: ${counts.filter((n) => n > 0).length}`);
    assert.equal(new GridTessellation(32, 4).cellCount, 32 ** 4);
  });

  test('inspirations come from the nearest cells first, by centroid spacing', () => {
    const cvt = new CvtTessellation([[0, 0], [0.1, 0], [0.2, 0], [0.3, 0], [0.4, 0]]);
    const elite = (cell: number, commit: string) => ({ experimentId: 'x', island: 0, cellKey: String(cell), cell: [cell], descriptor: [0, 0], commitHash: commit, jobId: null, fitness: 1, source: 'ingestion' });
    const base = elite(0, 'base');
    const { inspirations } = selectInspirations(base, [base, elite(4, 'far'), elite(2, 'two'), elite(1, 'one')], 2, 3, new SeededRandom(1), (a, b) => cvt.ringDistance(a, b));
    assert.deepEqual(inspirations.map((e) => e.commitHash), ['one', 'two']);
  });
});

describe('the CVT archive', () => {
  let fixture: Fixture;
  before(async () => {
    fixture = await createFixture({ files: { 'main.js': 'export const radius = 0.1;\n' } });
  });
  after(() => fixture.close());

  test('with the metrics descriptor: MAPELITES_CELLS cells, neighbours compete, coverage over the cells', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'cvt-metrics', MAPELITES_ARCHIVE_TYPE: 'cvt', MAPELITES_CELLS: '16' });
    const experimentId = settings.experiment.uuid;
    const archive = new MapElitesArchive({ pool: fixture.pool, experimentId, settings: settings.archive, descriptor: new MetricsDescriptor(settings.archive), seed: 1 });
    await archive.open();
    const ingest = async (commit: string, sum: number, score: number) => {
      const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      await completeJob(fixture.pool, experimentId, job.id, commit, { sum_radii: sum, validity: 1, combined_score: score });
      return archive.ingest((await getJob(fixture.pool, job.id))!);
    };
    const first = await ingest('a1', 1.0, 0.5);
    assert.equal(first.status, 'ingested');
    assert.equal(first.placements[0].cell.length, 1, 'a CVT cell is one index');
    // A near-identical descriptor lands in the same Voronoi cell and must beat the elite there.
    assert.equal((await ingest('a2', 1.001, 0.4)).status, 'rejected');
    assert.equal((await ingest('a3', 1.002, 0.6)).status, 'ingested');
    const coverage = await archive.coverage();
    assert.equal(coverage.cellsPerIsland, 16);
    assert.equal(coverage.coverage, coverage.elites / 16);
  });

  test('with the embedding descriptor: centroids are refitted with the PCA, stored, and loaded again', async () => {
    const settings = fixture.settingsWith({
      EXPERIMENT_ID: 'cvt-embedding', MAPELITES_ARCHIVE_TYPE: 'cvt', MAPELITES_CELLS: '8', MAPELITES_BEHAVIOR_DESCRIPTOR: 'embedding',
      MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS: '2', MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES: '4', MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL: '3',
      MAPELITES_EMBEDDING_DIMENSIONS: '64',
    });
    const experimentId = settings.experiment.uuid;
    const clone = path.join(tempDir(), 'clone');
    await cloneOrFetch(fixture.remote, clone);
    const make = () => {
      const embedding = new RepositoryStateEmbedding({ db: fixture.pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64), settings: settings.archive.embedding });
      return new MapElitesArchive({
        pool: fixture.pool, experimentId, settings: settings.archive, descriptor: new EmbeddingDescriptor(settings.archive, embedding, undefined), seed: 1,
        ensureCommit: () => cloneOrFetch(fixture.remote, clone).then(() => undefined),
      });
    };
    const archive = make();
    await archive.open();
    const initial = (archive.tessellation as CvtTessellation).centroids;
    let refitted = false;
    for (let i = 0; i < 4; i++) {
      const commit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `export const radius = 0.${i + 2};\nconst extra${i} = [${'1,'.repeat(i * 3)}];\n` }, `cvt-${i}`);
      const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: i / 10 });
      refitted ||= Boolean((await archive.ingest((await getJob(fixture.pool, job.id))!)).refit);
    }
    assert.ok(refitted, 'the PCA was fitted');
    const centroids = (archive.tessellation as CvtTessellation).centroids;
    assert.notDeepEqual(centroids, initial, 'the centroids follow the population');
    const state = await getArchiveState(fixture.pool, experimentId);
    assert.deepEqual((state?.projection as { centroids: number[][] }).centroids, centroids);
    for (const elite of await listElites(fixture.pool, experimentId)) assert.deepEqual(elite.cell, archive.tessellation.cellOf(elite.descriptor));
    const reopened = make();
    await reopened.open();
    assert.deepEqual((reopened.tessellation as CvtTessellation).centroids, centroids, 'a restarted scheduler cuts the same cells');
  });

  test('prepare reads many commits at once (SCHEDULER_INGEST_CONCURRENCY) and ingestion finds their vectors ready', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'prepare-concurrent', MAPELITES_BEHAVIOR_DESCRIPTOR: 'embedding', MAPELITES_EMBEDDING_DIMENSIONS: '64', SCHEDULER_INGEST_CONCURRENCY: '3' });
    assert.equal(settings.scheduler.ingestConcurrency, 3);
    const experimentId = settings.experiment.uuid;
    const clone = path.join(tempDir(), 'clone');
    await cloneOrFetch(fixture.remote, clone);
    const embedding = new RepositoryStateEmbedding({ db: fixture.pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64), settings: settings.archive.embedding });
    const archive = new MapElitesArchive({
      pool: fixture.pool, experimentId, settings: settings.archive, descriptor: new EmbeddingDescriptor(settings.archive, embedding, undefined), seed: 1,
      ensureCommit: () => cloneOrFetch(fixture.remote, clone).then(() => undefined),
    });
    await archive.open();
    const jobs = [];
    for (let i = 0; i < 6; i++) {
      const commit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `export const radius = 0.${i + 3};\n` }, `prepare-${i}`);
      const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: i / 10 });
      jobs.push((await getJob(fixture.pool, job.id))!);
    }
    await archive.prepare(jobs, settings.scheduler.ingestConcurrency);
    assert.equal(await countCommitEmbeddings(fixture.pool, experimentId, embedding.embedderId), 7, 'six children and their parent, read ahead');
    for (const job of jobs) assert.equal((await archive.ingest(job)).commit, job.resultCommit);
    assert.equal(await countCommitEmbeddings(fixture.pool, experimentId, embedding.embedderId), 7, 'nothing read twice');
  });
});
