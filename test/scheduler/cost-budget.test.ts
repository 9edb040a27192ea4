import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { runSchedulerLoop } from '../../src/scheduler/loop.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { listByStatus } from '../../src/shared/db/jobs.ts';
import { recordModelCall } from '../../src/shared/db/usage.ts';
import { collectStatus, formatStatus } from '../../src/cli/status.ts';
import { stopTestServer } from '../helpers/database.ts';
import { completeJob, createFixture, pushCommit, silentLogger } from './fixture.ts';

after(() => stopTestServer());

test('LORELEY_MAX_COST_USD stops new scheduling and ends the run as the job budget does', { timeout: 120_000 }, async () => {
  // Each finished job costs $0.30; with two in flight the projection passes $1.00 after two finish.
  const fixture = await createFixture({
    env: { LORELEY_MAX_COST_USD: '1.00', SCHEDULER_MAX_UNFINISHED_JOBS: '3', SCHEDULER_SCHEDULE_BATCH_SIZE: '2', MAPELITES_SEED_POPULATION_SIZE: '2' },
  });
  try {
    const experimentId = fixture.settings.experiment.uuid;
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' });
    await scheduler.start();
    const finishAll = async () => {
      const open = await listByStatus(fixture.pool, experimentId, ['pending', 'queued', 'running']);
      for (const [index, job] of open.entries()) {
        const commit = job.kind === 'baseline' ? fixture.rootCommit : pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `export const radius = ${0.2 + index / 100 + Math.random() / 1000};\n` }, `job-${job.id}`);
        if (job.kind !== 'baseline') {
          await recordModelCall(fixture.pool, { experimentId, jobId: job.id, purpose: 'coding', model: 'test-model', promptTokens: 1000, completionTokens: 500, latencyMs: 10, costUsd: 0.3, ok: true });
        }
        await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: 0.5 + index / 10, sum_radii: 1 + index / 10, validity: 1 });
      }
      return open.length;
    };

    const evolutionJobs = async () => (await listByStatus(fixture.pool, experimentId, ['pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled'])).filter((job) => job.kind === 'evolution');
    // The baseline gates the run: it is evaluated before anything else is scheduled.
    await scheduler.tick();
    assert.equal((await evolutionJobs()).length, 0);
    await finishAll();
    // Round 1: two seeds scheduled; nothing spent yet, so the budget does not bite.
    await scheduler.tick();
    assert.equal((await evolutionJobs()).length, 2);
    assert.equal(await scheduler.costBudgetExhausted(), false);
    await finishAll();
    // Round 2: $0.60 spent, average $0.30: two more in flight would project $1.20 >= $1.00, but
    // the check happens before they exist, so two more are scheduled ($0.60 < $1.00).
    await scheduler.tick();
    const afterSecond = (await evolutionJobs()).length;
    assert.equal(afterSecond, 4);
    await finishAll();
    // Round 3: $1.20 spent: nothing new is scheduled, and once everything is in, the run is finished.
    const outcome = await runSchedulerLoop(scheduler, { pollIntervalSeconds: 0.05, signal: AbortSignal.timeout(60_000) });
    assert.equal(outcome.reason, 'finished');
    assert.equal((await evolutionJobs()).length, 4, 'no job is scheduled past the cost budget');
    assert.equal(await scheduler.costBudgetExhausted(), true);

    const status = await collectStatus(fixture.settings, fixture.url);
    const text = formatStatus(status);
    assert.match(text, /models\s+4 calls \(0 failed\), 4000 prompt \+ 2000 completion tokens, \$1\.2000 of \$1\.00/);
    assert.match(text, /jobs\s+4: pending 0, queued 0, running 0, succeeded 4/);
  } finally {
    await fixture.close();
  }
});
