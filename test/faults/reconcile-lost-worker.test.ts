import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { getJob } from '../../src/shared/db/jobs.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, runningJob, silentLogger } from '../scheduler/fixture.ts';

/**
 * Item 1 of issue 7, the reconcile side: whoever notices first that a worker is gone (the
 * scheduler by the lapsed queue heartbeat, or pg-boss's own heartbeat sweep), the job is handed
 * back with its attempt returned, never failed, whatever the retry setting. And right after the
 * scheduler took its lock (a start, or the database back after an outage), a lapsed heartbeat is
 * not trusted for one heartbeat interval.
 */

after(() => stopTestServer());

test('lost workers found by the scheduler or by pg-boss\'s sweep: handed back, attempt returned; a real failure still fails', async () => {
  const fixture = await createFixture({ env: { MAPELITES_SEED_POPULATION_SIZE: '0', SCHEDULER_MAX_TOTAL_JOBS: '0' } });
  try {
    const queue = fixture.settings.queue.name;
    const heartbeat = fixture.settings.queue.heartbeatSeconds;
    const schema = fixture.settings.database.bossSchema;
    const scheduler = (trustedAfter: number) =>
      new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001', heartbeatsTrustedAfter: trustedAfter });
    const fresh = scheduler(Date.now() + 3_600_000);
    await fresh.start();
    await fixture.pool.query(`UPDATE evolution_jobs SET status = 'cancelled' WHERE kind = 'baseline'`);

    const silent = await runningJob(fixture, 'gone-host');
    const swept = await runningJob(fixture, 'gone-host');
    const broken = await runningJob(fixture, 'gone-host');
    // The worker of `silent` stopped heartbeating two intervals ago; pg-boss's sweep already failed `swept`.
    await fixture.pool.query(`UPDATE ${schema}.job SET heartbeat_on = now() - $2 * interval '1 second' WHERE id = $1`, [silent.queueJobId, heartbeat * 2]);
    await fixture.boss.fail(queue, swept.queueJobId, { value: { message: 'job heartbeat timeout' } });
    await fixture.boss.fail(queue, broken.queueJobId, { message: 'the evaluator crashed' });

    // Just after taking the lock, a lapsed heartbeat may only mean the database was away: not judged.
    let tick = await fresh.tick();
    assert.equal((await getJob(fixture.pool, silent.id))!.status, 'running', 'not judged within the first heartbeat interval');
    assert.equal((await getJob(fixture.pool, swept.id))!.status, 'queued', 'pg-boss\'s own verdict is a lost worker: handed back');
    assert.equal((await getJob(fixture.pool, broken.id))!.status, 'failed', 'a real failure fails');
    assert.equal(tick.reconciled.handedBack, 1);

    tick = await scheduler(0).tick();
    assert.equal(tick.reconciled.handedBack, 1);
    for (const lost of [silent, swept]) {
      const job = (await getJob(fixture.pool, lost.id))!;
      assert.equal(job.status, 'queued');
      assert.equal(job.attempts, 0, 'the attempt was given back');
      assert.notEqual(job.queueJobId, lost.queueJobId, 'on a fresh queue job');
      assert.match(job.lastError ?? '', /heartbeat/);
      const [old] = await fixture.boss.findJobs(queue, { id: lost.queueJobId });
      assert.ok(['cancelled', 'failed'].includes(old.state), `the old queue job cannot run again (${old.state})`);
      const [next] = await fixture.boss.findJobs(queue, { id: job.queueJobId! });
      assert.equal(next.state, 'created');
    }
  } finally {
    await fixture.close();
  }
});

test('with retries on, a job pg-boss put back into retry for a lapsed heartbeat is handed back once, and the retry cancelled', async () => {
  const fixture = await createFixture({ env: { MAPELITES_SEED_POPULATION_SIZE: '0', SCHEDULER_MAX_TOTAL_JOBS: '0', TASKS_WORKER_MAX_RETRIES: '2' } });
  try {
    const queue = fixture.settings.queue.name;
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001', heartbeatsTrustedAfter: 0 });
    await scheduler.start();
    await fixture.pool.query(`UPDATE evolution_jobs SET status = 'cancelled' WHERE kind = 'baseline'`);
    const lost = await runningJob(fixture, 'gone-host');
    await fixture.boss.fail(queue, lost.queueJobId, { value: { message: 'job heartbeat timeout' } });
    assert.equal((await fixture.boss.findJobs(queue, { id: lost.queueJobId }))[0].state, 'retry');
    const tick = await scheduler.tick();
    assert.equal(tick.reconciled.handedBack, 1);
    assert.equal((await fixture.boss.findJobs(queue, { id: lost.queueJobId }))[0].state, 'cancelled', 'pg-boss\'s retry will not run beside the fresh queue job');
    const job = (await getJob(fixture.pool, lost.id))!;
    assert.equal(job.status, 'queued');
    assert.equal(job.attempts, 0);
  } finally {
    await fixture.close();
  }
});
