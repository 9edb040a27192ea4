import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { MapElitesArchive } from '../../src/scheduler/archive/archive.ts';
import { MetricsDescriptor } from '../../src/scheduler/archive/descriptor.ts';
import type { SchedulerContext } from '../../src/scheduler/context.ts';
import { SchedulerRepository } from '../../src/scheduler/repository.ts';
import { scheduleStage } from '../../src/scheduler/schedule.ts';
import { listElites, readArchiveVersion, type Elite } from '../../src/shared/db/archive.ts';
import { getJob, insertJob } from '../../src/shared/db/jobs.ts';
import type { Settings } from '../../src/shared/settings/index.ts';
import { stopTestServer } from '../helpers/database.ts';
import { completeJob, createFixture, silentLogger, type Fixture } from './fixture.ts';

/**
 * The scheduler's elites in memory (src/scheduler/archive/elites.ts) on real Postgres: read once,
 * kept up to date by the scheduler's own writes, read again when anyone else wrote the elites
 * (another archive instance, as a standby or a rebuild would; plain SQL).
 */

after(() => stopTestServer());

function archiveFor(fixture: Fixture, settings: Settings): MapElitesArchive {
  return new MapElitesArchive({
    pool: fixture.pool, experimentId: settings.experiment.uuid, settings: settings.archive,
    descriptor: new MetricsDescriptor(settings.archive), seed: 1,
  });
}

async function ingestAs(fixture: Fixture, archive: MapElitesArchive, settings: Settings, commit: string, metrics: Record<string, number>, island = 0) {
  const experimentId = settings.experiment.uuid;
  const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit, island });
  await completeJob(fixture.pool, experimentId, job.id, commit, metrics);
  return archive.ingest((await getJob(fixture.pool, job.id))!);
}

/** What is held, flattened in (island, cell key) order, for comparing with the table. */
async function held(fixture: Fixture, archive: MapElitesArchive, experimentId: string): Promise<Elite[]> {
  return [...(await archive.elites.byIsland(fixture.pool, await readArchiveVersion(fixture.pool, experimentId))).values()].flat();
}

function comparable(elites: readonly Elite[]) {
  return elites.map((e) => `${e.island}|${e.cellKey}|${e.commitHash}|${e.fitness}|${e.source}|${e.descriptor.join(',')}`).sort();
}

describe('elites in memory', () => {
  let fixture: Fixture;
  before(async () => {
    fixture = await createFixture();
  });
  after(() => fixture.close());

  test('read once, updated by the scheduler\'s own writes, read again after anyone else\'s', async () => {
    const settings = fixture.settingsWith({ EXPERIMENT_ID: 'elites-memory', MAPELITES_ISLANDS: '2', MAPELITES_MIGRATION_INTERVAL: '3' });
    const experimentId = settings.experiment.uuid;
    const archive = archiveFor(fixture, settings);
    await archive.open();
    const context: SchedulerContext = {
      settings, experimentId, pool: fixture.pool, boss: fixture.boss, logger: silentLogger,
      repository: new SchedulerRepository(settings), archive, seed: 1,
    };
    await ingestAs(fixture, archive, settings, 'a1', { sum_radii: 0.5, validity: 1, combined_score: 0.5 }, 0);
    await ingestAs(fixture, archive, settings, 'a2', { sum_radii: 1.5, validity: 1, combined_score: 0.6 }, 1);

    assert.ok((await scheduleStage(context, fixture.rootCommit)) > 0, 'jobs sampled from the elites');
    assert.equal(archive.elites.loads, 1, 'the first tick reads the elites');
    await scheduleStage(context, fixture.rootCommit);
    assert.equal(archive.elites.loads, 1, 'the next tick does not read them again');

    // Our own writes: an ingestion, and the migration the third ingestion brings.
    const third = await ingestAs(fixture, archive, settings, 'a3', { sum_radii: 2.5, validity: 1, combined_score: 0.9 }, 0);
    assert.ok((third.migrated ?? 0) > 0, 'a migration placed elites');
    assert.deepEqual(comparable(await held(fixture, archive, experimentId)), comparable(await listElites(fixture.pool, experimentId)));
    assert.equal(archive.elites.loads, 1, 'own writes are applied in memory, not read back');

    // Another writer under the same experiment (a standby that took over, a rebuild): its
    // ingestion changes the version, so what is held is read again and includes it.
    const other = archiveFor(fixture, settings);
    await other.open();
    await ingestAs(fixture, other, settings, 'b1', { sum_radii: 0.1, validity: 0.1, combined_score: 0.3 }, 1);
    assert.deepEqual(comparable(await held(fixture, archive, experimentId)), comparable(await listElites(fixture.pool, experimentId)));
    assert.equal(archive.elites.loads, 2);
    assert.ok((await held(fixture, archive, experimentId)).some((e) => e.commitHash === 'b1'));

    // The other writer again, then one of ours before anything is read: ours finds a version it
    // does not hold and drops what is held rather than patching a stale copy.
    await ingestAs(fixture, other, settings, 'b2', { sum_radii: 1.1, validity: 0.1, combined_score: 0.4 }, 0);
    await ingestAs(fixture, archive, settings, 'a4', { sum_radii: 2.1, validity: 0.1, combined_score: 0.4 }, 1);
    const now = await held(fixture, archive, experimentId);
    assert.equal(archive.elites.loads, 3);
    assert.ok(now.some((e) => e.commitHash === 'b2') && now.some((e) => e.commitHash === 'a4'));
    assert.deepEqual(comparable(now), comparable(await listElites(fixture.pool, experimentId)));

    // Plain SQL (a fix by hand), then everything deleted (what a rebuild starts with).
    await fixture.pool.query(`UPDATE archive_elites SET fitness = 5 WHERE experiment_id = $1 AND commit_hash = 'a1'`, [experimentId]);
    assert.equal((await held(fixture, archive, experimentId)).find((e) => e.commitHash === 'a1')?.fitness, 5);
    await fixture.pool.query('DELETE FROM archive_elites WHERE experiment_id = $1', [experimentId]);
    assert.deepEqual(await held(fixture, archive, experimentId), []);
    assert.equal(archive.elites.loads, 5);

    // Another experiment's writes leave this one's version alone.
    const version = await readArchiveVersion(fixture.pool, experimentId);
    const elsewhere = fixture.settingsWith({ EXPERIMENT_ID: 'elites-memory-other' });
    const otherArchive = archiveFor(fixture, elsewhere);
    await otherArchive.open();
    await ingestAs(fixture, otherArchive, elsewhere, 'x1', { sum_radii: 1, validity: 1, combined_score: 1 });
    assert.equal(await readArchiveVersion(fixture.pool, experimentId), version);
  });
});
