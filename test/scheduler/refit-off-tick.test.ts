import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { MapElitesArchive } from '../../src/scheduler/archive/archive.ts';
import { EmbeddingDescriptor } from '../../src/scheduler/archive/descriptor.ts';
import type { SchedulerContext } from '../../src/scheduler/context.ts';
import { HashedNgramEmbedder } from '../../src/scheduler/embedding/embedder.ts';
import { RepositoryStateEmbedding } from '../../src/scheduler/embedding/repository-state.ts';
import { ingestStage } from '../../src/scheduler/ingest.ts';
import { SchedulerRepository } from '../../src/scheduler/repository.ts';
import { scheduleStage } from '../../src/scheduler/schedule.ts';
import { getArchiveState, listElites, type Elite } from '../../src/shared/db/archive.ts';
import { insertJob, listAwaitingIngestion } from '../../src/shared/db/jobs.ts';
import type { Settings } from '../../src/shared/settings/index.ts';
import { cloneOrFetch } from '../../src/shared/git.ts';
import { stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { waitFor } from '../helpers/processes.ts';
import { completeJob, createFixture, pushCommit, silentLogger, type Fixture } from './fixture.ts';

/**
 * The refit off the tick on real Postgres and git: the ingest stage that reaches a due refit
 * starts it and stops ingesting; while it computes and is written the schedule stage runs (it does
 * not wait for the refit's transaction) and the ingest stage ingests nothing; the first stage that
 * finds it applied ingests on. The archive comes out as an inline refit at the same ingestion
 * leaves it, so a replay of the same ingestions gets the same elites.
 */

after(() => stopTestServer());

const FILES = {
  'main.js': 'export function pack(n) { const radius = 0.1; return Array.from({ length: n }, () => radius); }\n',
  'lib/util.js': 'export const clamp = (x, lo, hi) => Math.min(Math.max(x, lo), hi);\n',
};

const VARIANTS = [
  'const radius = 0.3; const grid = 5;',
  'function spiral(k) { return k * 0.01; } const turns = 7;',
  'const angles = [0, 1, 2, 3].map((a) => a * Math.PI / 2);',
  'class Packer { constructor() { this.best = null; } }',
  'for (let i = 0; i < 26; i++) { console.log(i * i); }',
];

/** An elite no ingestion touches (an island beyond MAPELITES_ISLANDS): the refit's rewrite must lock its row. */
const SENTINEL = 'sentinel-elite';

describe('refit off the tick', () => {
  let fixture: Fixture;
  let clone: string;
  let commits: string[];
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
        MAPELITES_ISLANDS: '1',
        SCHEDULER_INGEST_BATCH_SIZE: '10',
        SCHEDULER_INGEST_CONCURRENCY: '1',
        SCHEDULER_MAX_UNFINISHED_JOBS: '50',
      },
    });
    clone = path.join(tempDir(), 'clone');
    await cloneOrFetch(fixture.remote, clone);
    commits = VARIANTS.map((variant, i) => pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `${FILES['main.js']}${variant}\n` }, `v${i}`));
    await cloneOrFetch(fixture.remote, clone);
  });
  after(() => fixture.close());

  async function prepareExperiment(name: string): Promise<{ settings: Settings; archive: MapElitesArchive; context: SchedulerContext }> {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: name });
    const experimentId = settings.experiment.uuid;
    const state = new RepositoryStateEmbedding({ db: fixture.pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64), settings: settings.archive.embedding });
    const archive = new MapElitesArchive({
      pool: fixture.pool, experimentId, settings: settings.archive, descriptor: new EmbeddingDescriptor(settings.archive, state, undefined), seed: 1,
      ensureCommit: async () => undefined,
    });
    await archive.open();
    await fixture.pool.query(
      `INSERT INTO archive_elites (experiment_id, island, cell_key, cell, descriptor, commit_hash, fitness, source)
       VALUES ($1, 7, '0,0', '{0,0}', '{0.01,0.01}', $2, 0, 'ingestion')`,
      [experimentId, SENTINEL],
    );
    for (const [i, commit] of commits.entries()) {
      const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: (i + 1) / 10 });
    }
    const context: SchedulerContext = {
      settings, experimentId, pool: fixture.pool, boss: fixture.boss, logger: silentLogger,
      repository: new SchedulerRepository(settings), archive, seed: 1,
    };
    return { settings, archive, context };
  }

  function sameElites(actual: readonly Elite[], expected: readonly Elite[]): void {
    const key = (e: Elite) => `${e.island}|${e.cellKey}|${e.commitHash}|${e.fitness}`;
    assert.deepEqual(actual.map(key), expected.map(key));
    actual.forEach((elite, i) => elite.descriptor.forEach((value, d) => assert.ok(Math.abs(value - expected[i].descriptor[d]) < 1e-9)));
  }

  test('the tick goes on while the refit computes and is written; it lands where an inline refit does', async () => {
    // The reference: the same five ingestions with inline refits. The batch's vectors are computed
    // ahead (prepare), so the first ingestion already has enough samples; the next refit is due
    // REFIT_INTERVAL ingestions later.
    const inline = await prepareExperiment('refit-inline');
    const inlineJobs = await listAwaitingIngestion(fixture.pool, inline.context.experimentId, 10);
    await inline.archive.prepare(inlineJobs, 1);
    const inlineOutcomes = [];
    for (const job of inlineJobs) inlineOutcomes.push(await inline.archive.ingest(job));
    assert.deepEqual(inlineOutcomes.map((o) => Boolean(o.refit)), [true, false, false, true, false]);

    const { archive, context } = await prepareExperiment('refit-deferred');
    const { experimentId } = context;
    const holder = new pg.Client({ connectionString: fixture.url, options: `-c search_path=${fixture.settings.database.schema},public` });
    await holder.connect();
    try {
      // Holds the sentinel elite's row: the refit's rewrite (DELETE of the experiment's elites)
      // waits on it, so the tick's behaviour while a refit is being written can be observed.
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM archive_elites WHERE experiment_id = $1 AND commit_hash = $2 FOR UPDATE', [experimentId, SENTINEL]);

      const first = await ingestStage(context);
      assert.equal(first.length, 1, 'the stage stops at the ingestion the refit fell due at');
      assert.ok(archive.refitPending);
      assert.equal((await listAwaitingIngestion(fixture.pool, experimentId, 10)).length, 4);

      await waitFor('the refit writing its elites (blocked on the held row)', async () => {
        const { rows } = await fixture.pool.query(
          `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM archive_elites%'`,
        );
        return rows.length > 0;
      }, 60_000, 20);

      // Meanwhile the tick goes on: schedule samples from the elites as they were, and ingestion waits.
      assert.ok((await scheduleStage(context, fixture.rootCommit)) > 0, 'the schedule stage does not wait for the refit');
      assert.deepEqual(await ingestStage(context), [], 'nothing is ingested while the refit is pending');
      assert.equal((await listAwaitingIngestion(fixture.pool, experimentId, 10)).length, 4);
      assert.equal((await getArchiveState(fixture.pool, experimentId))?.projectionFittedAt, null);

      await holder.query('COMMIT');
      // The next stages apply it, ingest up to the next refit (three later), then the last job.
      const sizes: number[] = [];
      await waitFor('every job ingested', async () => {
        const outcomes = await ingestStage(context);
        if (outcomes.length > 0) sizes.push(outcomes.length);
        return !archive.refitPending && (await listAwaitingIngestion(fixture.pool, experimentId, 10)).length === 0;
      }, 60_000, 20);
      assert.deepEqual(sizes, [3, 1]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }

    const state = await getArchiveState(fixture.pool, experimentId);
    assert.equal(state?.projectionFittedAt, 4, 'fitted at the ingestion it fell due at');
    const { rows } = await fixture.pool.query<{ seq: number }>(
      'SELECT ingestion_seq AS seq FROM evolution_jobs WHERE experiment_id = $1 AND ingestion_seq IS NOT NULL ORDER BY finished_at, id',
      [experimentId],
    );
    assert.deepEqual(rows.map((row) => row.seq), [1, 2, 3, 4, 5], 'ingested in order');
    sameElites(await listElites(fixture.pool, experimentId), await listElites(fixture.pool, inline.context.experimentId));
    // And the scheduler's copy in memory is the table's.
    const held = [...(await archive.elites.byIsland(fixture.pool, undefined)).values()].flat();
    sameElites(held, await listElites(fixture.pool, experimentId));
  });

  test('a refit computed off the tick is not written over elites another writer changed meanwhile', async () => {
    const { archive, context } = await prepareExperiment('refit-changed');
    const { experimentId } = context;
    const holder = new pg.Client({ connectionString: fixture.url, options: `-c search_path=${fixture.settings.database.schema},public` });
    await holder.connect();
    try {
      // Another writer (a scheduler that took over) holds the elites' version row and changes an elite.
      await holder.query('BEGIN');
      assert.equal((await ingestStage(context)).length, 1);
      assert.ok(archive.refitPending);
      await holder.query('SELECT version FROM archive_versions WHERE experiment_id = $1 FOR UPDATE', [experimentId]);
      await holder.query('UPDATE archive_elites SET fitness = 42 WHERE experiment_id = $1 AND commit_hash = $2', [experimentId, SENTINEL]);
      await waitFor('the refit waiting for the version row', async () => {
        const { rows } = await fixture.pool.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%archive_versions%'`);
        return rows.length > 0;
      }, 60_000, 20);
      await holder.query('COMMIT');
      await waitFor('the refit dropped and ingestion going on', async () => (await ingestStage(context)).length > 0, 60_000, 20);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
    assert.equal(archive.lastRefit, undefined, 'nothing applied');
    // The refit falls due again at the next ingestion and lands on the archive as it now is.
    await archive.applyPendingRefit({ wait: true });
    const sentinel = (await listElites(fixture.pool, experimentId)).find((elite) => elite.commitHash === SENTINEL);
    assert.equal(sentinel?.fitness, 42, "the other writer's change stands");
    const held = [...(await archive.elites.byIsland(fixture.pool, undefined)).values()].flat();
    sameElites(held, await listElites(fixture.pool, experimentId));
  });

  test('a refit due at an ingestion whose scheduler stopped before applying it is applied by the next one before it ingests', async () => {
    const died = await prepareExperiment('refit-resumed');
    const { experimentId } = died.context;
    const [job] = await listAwaitingIngestion(fixture.pool, experimentId, 1);
    await died.archive.prepare(await listAwaitingIngestion(fixture.pool, experimentId, 10), 1);
    // The ingestion committed, its refit never ran (the process was gone).
    await died.archive.ingest(job, { refit: 'none' });
    assert.equal((await getArchiveState(fixture.pool, experimentId))?.projectionFittedAt, null);

    // The next scheduler: its own archive object over the same experiment.
    const settings = died.settings;
    const state = new RepositoryStateEmbedding({ db: fixture.pool, experimentId, repository: clone, embedder: new HashedNgramEmbedder(64), settings: settings.archive.embedding });
    const archive = new MapElitesArchive({
      pool: fixture.pool, experimentId, settings: settings.archive, descriptor: new EmbeddingDescriptor(settings.archive, state, undefined), seed: 1,
      ensureCommit: async () => undefined,
    });
    await archive.open();
    const context: SchedulerContext = { ...died.context, archive };
    assert.deepEqual(await ingestStage(context), [], 'the first stage starts the refit and ingests nothing');
    assert.ok(archive.refitPending);
    await waitFor('the refit applied and ingestion going on', async () => (await ingestStage(context)).length > 0, 60_000, 20);
    assert.equal((await getArchiveState(fixture.pool, experimentId))?.projectionFittedAt, 1, 'applied where it fell due');
    const { rows } = await fixture.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM archive_refits WHERE experiment_id = $1', [experimentId]);
    assert.equal(rows[0].n, 1);
  });
});
