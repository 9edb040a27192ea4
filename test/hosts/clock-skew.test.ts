import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { collectStatus, formatStatus } from '../../src/cli/status.ts';
import { getJob } from '../../src/shared/db/jobs.ts';
import { upsertWorker } from '../../src/shared/db/workers.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, runningJob, silentLogger } from '../scheduler/fixture.ts';

/**
 * Hosts whose clocks disagree (issue 13): everything compared across hosts is measured by the
 * database's clock. This test process plays a host whose clock is ten minutes off (its `Date.now`
 * shifted, the database's untouched) and runs the scheduler's reconcile and `loreley status` there.
 */

after(() => stopTestServer());

const SKEW_MS = 10 * 60 * 1000;

async function withClockSkew<T>(skewMs: number, run: () => Promise<T>): Promise<T> {
  const real = Date.now;
  Date.now = () => real.call(Date) + skewMs;
  try {
    return await run();
  } finally {
    Date.now = real;
  }
}

test('a scheduler whose clock is ahead hands back no live worker\'s job, and one whose clock is behind still finds a lost one', async () => {
  const fixture = await createFixture({ env: { MAPELITES_SEED_POPULATION_SIZE: '0', SCHEDULER_MAX_TOTAL_JOBS: '0' } });
  try {
    const schema = fixture.settings.database.bossSchema;
    const heartbeat = fixture.settings.queue.heartbeatSeconds;
    assert.ok(heartbeat * 1000 < SKEW_MS, 'the skew is larger than a heartbeat interval');
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001', heartbeatsTrustedAfter: 0 });
    await scheduler.start();
    await fixture.pool.query(`UPDATE evolution_jobs SET status = 'cancelled' WHERE kind = 'baseline'`);

    // Another host's worker heartbeats this very moment (by the database's clock).
    const live = await runningJob(fixture, 'other-host');
    await fixture.pool.query(`UPDATE ${schema}.job SET heartbeat_on = now() WHERE id = $1`, [live.queueJobId]);
    const ahead = await withClockSkew(SKEW_MS, () => scheduler.tick());
    assert.equal(ahead.reconciled.handedBack ?? 0, 0, 'a clock ten minutes ahead does not make a live heartbeat look lapsed');
    assert.equal((await getJob(fixture.pool, live.id))!.status, 'running');
    assert.equal((await getJob(fixture.pool, live.id))!.queueJobId, live.queueJobId);

    // Its worker then died: the heartbeat lapsed two intervals ago.
    await fixture.pool.query(`UPDATE ${schema}.job SET heartbeat_on = now() - $2 * interval '1 second' WHERE id = $1`, [live.queueJobId, heartbeat * 2]);
    const behind = await withClockSkew(-SKEW_MS, () => scheduler.tick());
    assert.equal(behind.reconciled.handedBack, 1, 'a clock ten minutes behind still sees the lapse');
    const job = (await getJob(fixture.pool, live.id))!;
    assert.equal(job.status, 'queued');
    assert.equal(job.attempts, 0, 'the attempt was given back');
  } finally {
    await fixture.close();
  }
});

test('loreley status on a host with a skewed clock shows presence ages by the database\'s clock', async () => {
  const fixture = await createFixture({ env: { MAPELITES_SEED_POPULATION_SIZE: '0', SCHEDULER_MAX_TOTAL_JOBS: '0' } });
  try {
    const experimentId = fixture.settings.experiment.uuid;
    await new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' }).start();
    await upsertWorker(fixture.pool, { experimentId, workerId: 'hostb-worker0001', role: 'worker', host: 'hostb', pid: 4242, state: 'idle', currentJobId: null });
    for (const skew of [SKEW_MS, -SKEW_MS]) {
      const report = await withClockSkew(skew, () => collectStatus(fixture.settings, fixture.settings.database.url!));
      const worker = report.workers.find((w) => w.workerId === 'hostb-worker0001');
      assert.ok(worker, JSON.stringify(report.workers));
      const ageSeconds = (new Date(report.now).getTime() - new Date(worker.lastHeartbeat).getTime()) / 1000;
      assert.ok(ageSeconds >= 0 && ageSeconds < 60, `age ${ageSeconds} s by the database's clock`);
      const text = await withClockSkew(skew, async () => formatStatus(report));
      const line = text.split('\n').find((l) => l.includes('hostb-worker0001'));
      assert.match(line ?? '', /seen \d{1,2}s ago/, 'seconds, not the ten minutes of skew');
    }
  } finally {
    await fixture.close();
  }
});
