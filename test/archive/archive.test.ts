import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MapElitesArchive } from '../../src/scheduler/archive/archive.ts';
import { MetricsDescriptor } from '../../src/scheduler/archive/descriptor.ts';
import { listElites } from '../../src/shared/db/archive.ts';
import { getJob, insertJob } from '../../src/shared/db/jobs.ts';
import type { Settings } from '../../src/shared/settings/index.ts';
import { stopTestServer } from '../helpers/database.ts';
import { completeJob, createFixture, type Fixture } from '../scheduler/fixture.ts';

/** The archive on real Postgres with the metrics descriptor: commits are just labels here. */

after(() => stopTestServer());

async function ingestAs(fixture: Fixture, archive: MapElitesArchive, settings: Settings, commit: string, metrics: Record<string, number>, island = 0) {
  const experimentId = settings.experiment.uuid;
  const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit, island });
  await completeJob(fixture.pool, experimentId, job.id, commit, metrics);
  const outcome = await archive.ingest((await getJob(fixture.pool, job.id))!);
  return { outcome, job: (await getJob(fixture.pool, job.id))! };
}

function archiveFor(fixture: Fixture, settings: Settings): MapElitesArchive {
  return new MapElitesArchive({
    pool: fixture.pool, experimentId: settings.experiment.uuid, settings: settings.archive,
    descriptor: new MetricsDescriptor(settings.archive), seed: 1,
  });
}

describe('MAP-Elites archive', () => {
  let fixture: Fixture;
  before(async () => {
    fixture = await createFixture();
  });
  after(() => fixture.close());

  test('a cell keeps its better elite (higher is better), and each ingestion is recorded on its job', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'archive-higher' });
    const archive = archiveFor(fixture, settings);
    await archive.open();
    const same = { validity: 1 };
    const first = await ingestAs(fixture, archive, settings, 'c1', { ...same, sum_radii: 1.0, combined_score: 0.5 });
    assert.equal(first.outcome.status, 'ingested');
    assert.equal(first.job.ingestionStatus, 'ingested');
    assert.equal(first.job.ingestionDelta, null);
    assert.match(first.job.ingestionReason!, /new cell/);
    assert.deepEqual((first.job.ingestionCell as { cell: number[] }).cell, [3, 9]);

    const worse = await ingestAs(fixture, archive, settings, 'c2', { ...same, sum_radii: 1.01, combined_score: 0.4 });
    assert.equal(worse.outcome.status, 'rejected');
    assert.equal(worse.job.ingestionStatus, 'rejected');
    assert.ok(Math.abs(worse.job.ingestionDelta! - -0.1) < 1e-9);
    assert.match(worse.job.ingestionReason!, /not better than elite c1/);

    const equal = await ingestAs(fixture, archive, settings, 'c3', { ...same, sum_radii: 1.02, combined_score: 0.5 });
    assert.equal(equal.outcome.status, 'rejected', 'an equal fitness does not replace the elite');

    const better = await ingestAs(fixture, archive, settings, 'c4', { ...same, sum_radii: 1.03, combined_score: 0.7 });
    assert.equal(better.outcome.status, 'ingested');
    assert.ok(Math.abs(better.job.ingestionDelta! - 0.2) < 1e-9);
    assert.match(better.job.ingestionReason!, /replaced c1/);

    const elsewhere = await ingestAs(fixture, archive, settings, 'c5', { validity: 0, sum_radii: 2.5, combined_score: 0 });
    assert.equal(elsewhere.outcome.status, 'ingested', 'another cell takes a worse candidate');

    const elites = await listElites(fixture.pool, settings.experiment.uuid);
    assert.deepEqual(elites.map((e) => [e.cellKey, e.commitHash]).sort(), [['3,9', 'c4'], ['9,0', 'c5']]);
    assert.equal((await archive.best())?.commitHash, 'c4');
  });

  test('with MAPELITES_FITNESS_HIGHER_IS_BETTER=false the lower fitness wins, and a missing metric gets the floor', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'archive-lower', MAPELITES_FITNESS_METRIC: 'loss', MAPELITES_FITNESS_HIGHER_IS_BETTER: 'false' });
    assert.equal(settings.archive.fitnessFloor, 1e9);
    const archive = archiveFor(fixture, settings);
    await archive.open();
    const metrics = { validity: 1, sum_radii: 1 };
    assert.equal((await ingestAs(fixture, archive, settings, 'l1', { ...metrics, loss: 5 })).outcome.status, 'ingested');
    assert.equal((await ingestAs(fixture, archive, settings, 'l2', { ...metrics, loss: 7 })).outcome.status, 'rejected');
    const missing = await ingestAs(fixture, archive, settings, 'l3', metrics);
    assert.equal(missing.outcome.status, 'rejected');
    assert.equal(missing.outcome.fitness, 1e9);
    assert.match(missing.job.ingestionReason!, /metric loss missing, fitness floor/);
    const better = await ingestAs(fixture, archive, settings, 'l4', { ...metrics, loss: 2 });
    assert.equal(better.outcome.status, 'ingested');
    assert.equal(better.job.ingestionDelta, 3);
    assert.equal((await archive.best())?.commitHash, 'l4');
  });

  test('islands: the baseline lands in every island and best elites migrate around the ring', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'archive-islands', MAPELITES_ISLANDS: '3', MAPELITES_MIGRATION_INTERVAL: '4' });
    const archive = archiveFor(fixture, settings);
    await archive.open();
    const experimentId = settings.experiment.uuid;
    const baseline = await insertJob(fixture.pool, { experimentId, baseCommit: 'root', kind: 'baseline' });
    await completeJob(fixture.pool, experimentId, baseline.id, 'root', { validity: 1, sum_radii: 0.5, combined_score: 0.2 });
    const outcome = await archive.ingest((await getJob(fixture.pool, baseline.id))!);
    assert.deepEqual(outcome.placements.map((p) => [p.island, p.placed]), [[0, true], [1, true], [2, true]]);

    // Island 1 gets a strong elite far from the root's cell; islands 0 and 2 weaker ones.
    await ingestAs(fixture, archive, settings, 'weak0', { validity: 0, sum_radii: 0.1, combined_score: 0.1 }, 0);
    await ingestAs(fixture, archive, settings, 'strong1', { validity: 0, sum_radii: 2.6, combined_score: 0.9 }, 1);
    const fourth = await ingestAs(fixture, archive, settings, 'mid2', { validity: 0, sum_radii: 1.5, combined_score: 0.3 }, 2);
    // The fourth ingestion is a migration point: each island's best goes to the next island. Island
    // 0's best is the root, which island 1 already holds, so two elites move.
    assert.equal(fourth.outcome.migrated, 2);
    const elites = await listElites(fixture.pool, experimentId);
    const on = (island: number) => elites.filter((e) => e.island === island).map((e) => e.commitHash).sort();
    assert.deepEqual(on(2), ['mid2', 'root', 'strong1'], 'island 1 sent its best to island 2');
    assert.deepEqual(on(0), ['mid2', 'root', 'weak0'], 'island 2 sent its best to island 0');
    assert.deepEqual(on(1), ['root', 'strong1'], "island 0's best (the root) was no better than island 1's copy");
    const migrant = elites.find((e) => e.island === 2 && e.commitHash === 'strong1')!;
    assert.equal(migrant.source, 'migration');
  });
});
