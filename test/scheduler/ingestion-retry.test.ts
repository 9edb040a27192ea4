import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { getJob, insertJob, listByStatus } from '../../src/shared/db/jobs.ts';
import { stopTestServer } from '../helpers/database.ts';
import { completeJob, createFixture, silentLogger } from './fixture.ts';

after(() => stopTestServer());

test('a failed ingestion is tried again on the next ticks before it is final', { timeout: 60_000 }, async () => {
  const fixture = await createFixture({ env: { SCHEDULER_MAX_TOTAL_JOBS: '1', MAPELITES_BEHAVIOR_DESCRIPTOR: 'embedding' } });
  try {
    const experimentId = fixture.settings.experiment.uuid;
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' });
    await scheduler.start();
    const [baseline] = await listByStatus(fixture.pool, experimentId, ['pending']);
    await completeJob(fixture.pool, experimentId, baseline.id, fixture.rootCommit, { combined_score: 0.5, sum_radii: 1, validity: 1 });
    // A result commit that exists nowhere: git cannot read it, so every ingestion attempt fails.
    const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
    await completeJob(fixture.pool, experimentId, job.id, 'f'.repeat(40), { combined_score: 0.9, sum_radii: 2, validity: 1 });

    await scheduler.tick();
    let row = await getJob(fixture.pool, job.id);
    assert.equal(row?.ingestionStatus, 'pending', 'the first failure leaves it awaiting ingestion');
    assert.match(row?.ingestionReason ?? '', /ingestion failed/);
    assert.equal(row?.ingestionAttempts, 1);
    assert.equal(row?.payload.ingestion_attempts, undefined, 'counted in its column, not the payload');

    await scheduler.tick();
    await scheduler.tick();
    row = await getJob(fixture.pool, job.id);
    assert.equal(row?.ingestionStatus, 'failed', 'the third failure is final');
    assert.equal(row?.ingestionAttempts, 3);
    assert.equal((await getJob(fixture.pool, baseline.id))?.ingestionStatus, 'ingested');
  } finally {
    await fixture.close();
  }
});
