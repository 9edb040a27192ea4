import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { FinalSummary } from '../../src/scheduler/finish.ts';
import { runSchedulerLoop } from '../../src/scheduler/loop.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { getExperiment } from '../../src/shared/db/experiments.ts';
import { getJob, insertJob, listByStatus, type EvolutionJob } from '../../src/shared/db/jobs.ts';
import { bestBranchName } from '../../src/shared/experiment.ts';
import { ensureQueues } from '../../src/shared/queue.ts';
import type { Settings } from '../../src/shared/settings/index.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createRemote, git } from '../helpers/git.ts';
import { completeJob, createFixture, pushCommit, silentLogger, type Fixture } from './fixture.ts';

after(() => stopTestServer());

function schedulerFor(fixture: Fixture, settings: Settings = fixture.settings): EvolutionScheduler {
  return new EvolutionScheduler({ settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' });
}

async function jobsOf(fixture: Fixture, settings: Settings = fixture.settings): Promise<EvolutionJob[]> {
  return listByStatus(fixture.pool, settings.experiment.uuid, ['pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled']);
}

describe('experiment start', () => {
  test('records the root once, schedules one baseline, and refuses another repository or root', async () => {
    const fixture = await createFixture();
    try {
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      const experiment = await getExperiment(fixture.pool, fixture.settings.experiment.uuid);
      assert.equal(experiment?.rootCommit, fixture.rootCommit);
      assert.equal(experiment?.repositoryUrl, fixture.remote);
      await schedulerFor(fixture).start();
      const jobs = await jobsOf(fixture);
      assert.equal(jobs.length, 1, 'a restart does not schedule a second baseline');
      assert.equal(jobs[0].kind, 'baseline');
      assert.equal(jobs[0].baseCommit, fixture.rootCommit);
      assert.equal(jobs[0].priority, 100);

      const other = createRemote({ 'other.js': 'x' });
      const elsewhere = fixture.settingsWith({ WORKER_REPO_REMOTE_URL: other.remote });
      await assert.rejects(schedulerFor(fixture, elsewhere).start(), /was started on repository .* but WORKER_REPO_REMOTE_URL is/);

      const later = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': 'changed' }, 'main');
      const moved = fixture.settingsWith({ MAPELITES_EXPERIMENT_ROOT_COMMIT: later });
      await assert.rejects(schedulerFor(fixture, moved).start(), /has root commit .* an experiment's root never changes/);
      // The branch moved on, but the recorded root stays.
      const restarted = schedulerFor(fixture);
      await restarted.start();
      assert.equal(restarted.rootCommit, fixture.rootCommit);
    } finally {
      await fixture.close();
    }
  });

  test('MAPELITES_EXPERIMENT_ROOT_COMMIT picks the root at first start', async () => {
    const fixture = await createFixture();
    try {
      const newer = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': 'newer' }, 'main');
      const settings = fixture.settingsWith({ MAPELITES_EXPERIMENT_ROOT_COMMIT: fixture.rootCommit });
      const scheduler = schedulerFor(fixture, settings);
      await scheduler.start();
      assert.equal(scheduler.rootCommit, fixture.rootCommit);
      assert.notEqual(newer, fixture.rootCommit);
    } finally {
      await fixture.close();
    }
  });
});

describe('tick', () => {
  test('runs ingest, dispatch, reconcile and schedule in order, and a failing stage does not stop the others', async () => {
    // No queue exists yet: dispatching fails for real.
    const fixture = await createFixture({ queues: false });
    try {
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      const [baseline] = await jobsOf(fixture);
      await completeJob(fixture.pool, fixture.settings.experiment.uuid, baseline.id, fixture.rootCommit, { combined_score: 0.3, sum_radii: 0.8, validity: 1 });
      await insertJob(fixture.pool, { experimentId: fixture.settings.experiment.uuid, baseCommit: fixture.rootCommit });

      const summary = await scheduler.tick();
      assert.deepEqual(summary.stages.map((s) => s.stage), ['ingest', 'dispatch', 'reconcile', 'schedule']);
      assert.deepEqual(summary.stages.map((s) => s.ok), [true, false, true, true]);
      assert.match(summary.stages[1].error!, /does not exist/);
      assert.equal(summary.ingested, 1, 'ingest ran before the failing stage');
      assert.equal(summary.scheduled, 4, 'schedule ran after it');
      assert.equal(summary.dispatched, 0);
      assert.equal((await listByStatus(fixture.pool, fixture.settings.experiment.uuid, ['pending'])).length, 5, 'the failed dispatch rolled back whole');

      await ensureQueues(fixture.boss, fixture.settings);
      const next = await scheduler.tick();
      assert.ok(next.stages.every((s) => s.ok));
      assert.equal(next.dispatched, 5);
    } finally {
      await fixture.close();
    }
  });

  test('dispatch sends the highest priority first, then the oldest, and marks them queued with their queue job', async () => {
    const fixture = await createFixture({ env: { SCHEDULER_DISPATCH_BATCH_SIZE: '2', SCHEDULER_MAX_UNFINISHED_JOBS: '1', MAPELITES_SEED_POPULATION_SIZE: '0' } });
    try {
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      const experimentId = fixture.settings.experiment.uuid;
      const [baseline] = await jobsOf(fixture);
      await fixture.pool.query(`UPDATE evolution_jobs SET status = 'cancelled' WHERE id = $1`, [baseline.id]);
      const old = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      const urgent = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit, priority: 5 });
      const newer = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      const summary = await scheduler.tick();
      assert.equal(summary.dispatched, 2);
      const queued = await listByStatus(fixture.pool, experimentId, ['queued']);
      assert.deepEqual(queued.map((j) => j.id).sort(), [old.id, urgent.id].sort());
      assert.equal((await getJob(fixture.pool, newer.id))?.status, 'pending');
      for (const job of queued) {
        const [queueJob] = await fixture.boss.findJobs<{ jobId: string }>(fixture.settings.queue.name, { id: job.queueJobId! });
        assert.equal(queueJob.data.jobId, job.id);
        assert.equal(queueJob.priority, job.priority);
      }
    } finally {
      await fixture.close();
    }
  });

  test('respects the unfinished cap, the batch sizes and the budget, then finishes with the best branch', async () => {
    const fixture = await createFixture({
      env: {
        SCHEDULER_MAX_UNFINISHED_JOBS: '3',
        SCHEDULER_SCHEDULE_BATCH_SIZE: '2',
        SCHEDULER_DISPATCH_BATCH_SIZE: '2',
        SCHEDULER_INGEST_BATCH_SIZE: '2',
        SCHEDULER_MAX_TOTAL_JOBS: '5',
        MAPELITES_SEED_POPULATION_SIZE: '4',
        SCHEDULER_GOAL: 'pack circles',
      },
    });
    try {
      const experimentId = fixture.settings.experiment.uuid;
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      let score = 0.3;
      const finishAll = async () => {
        for (const job of await listByStatus(fixture.pool, experimentId, ['queued', 'running', 'pending'])) {
          const commit = job.kind === 'baseline' ? job.baseCommit : pushCommit(fixture.remote, job.baseCommit, { 'main.js': `// ${job.id}\n` }, `evolution/job/x/${job.id}`);
          score += 0.1;
          await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: job.kind === 'baseline' ? 0.3 : score, sum_radii: score * 2, validity: 1 });
        }
      };

      let tick = await scheduler.tick();
      assert.equal(tick.dispatched, 1, 'the baseline');
      assert.equal(tick.scheduled, 0, 'the baseline gates the run: no evolution job before it succeeded');
      assert.equal(tick.unfinished, 1);
      await finishAll();

      tick = await scheduler.tick();
      assert.equal(tick.ingested, 1, 'the baseline');
      assert.equal(tick.scheduled, 2, 'seeds, capped by the batch size');
      tick = await scheduler.tick();
      assert.equal(tick.dispatched, 2);
      assert.equal(tick.scheduled, 1, 'capped by the unfinished cap (3)');
      assert.equal(tick.unfinished, 3);
      const seeds = (await jobsOf(fixture)).filter((j) => j.kind === 'evolution');
      assert.ok(seeds.every((j) => j.baseCommit === fixture.rootCommit && j.payload.seed === true && j.goal === 'pack circles'));

      tick = await scheduler.tick();
      assert.equal(tick.dispatched, 1);
      assert.equal(tick.scheduled, 0, 'no capacity under the unfinished cap');

      await finishAll();
      tick = await scheduler.tick();
      assert.equal(tick.ingested + tick.rejected, 2, 'the ingest batch size bounds one tick');
      assert.equal(tick.scheduled, 2, 'only two jobs left in the budget of 5');
      tick = await scheduler.tick();
      assert.equal(tick.ingested + tick.rejected, 1);
      assert.equal(tick.scheduled, 0, 'the budget of 5 is spent');
      assert.equal(tick.evolutionJobs, 5);
      const sampled = (await jobsOf(fixture)).filter((j) => j.kind === 'evolution' && !j.payload.seed);
      assert.equal(sampled.length, 2);
      assert.ok(sampled.every((j) => (j.payload.sampler as { baseCell?: unknown }).baseCell !== undefined));

      assert.equal(await scheduler.isFinished(), false);
      await finishAll();
      let finished: FinalSummary | undefined;
      const result = await runSchedulerLoop(scheduler, {
        pollIntervalSeconds: 0.05,
        signal: new AbortController().signal,
        onFinished: (summary) => {
          finished = summary;
        },
      });
      assert.equal(result.reason, 'finished');
      assert.ok(finished);
      assert.equal(finished.jobs.succeeded, 5);
      assert.equal((await scheduler.tick()).scheduled, 0, 'the budget is spent');
      const best = finished.best!;
      const { rows } = await fixture.pool.query(`SELECT max(value) AS top FROM metrics WHERE experiment_id = $1 AND name = 'combined_score'`, [experimentId]);
      assert.equal(best.fitness, rows[0].top, 'the best elite is the best result overall');
      assert.ok(best.fitness > 0.3, 'better than the baseline');
      assert.equal(finished.baseline?.fitness, 0.3);
      const branch = bestBranchName(fixture.settings.experiment);
      assert.equal(finished.branch, branch);
      assert.equal(finished.pushed, true);
      assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${branch}`), best.commit);
      assert.ok(finished.archive.elites >= 1);
      assert.ok((await getExperiment(fixture.pool, experimentId))?.finishedAt);
    } finally {
      await fixture.close();
    }
  });
});

describe('reconcile', () => {
  test('reconciles queued and running jobs whose queue job vanished, failed, was cancelled or completed', async () => {
    const fixture = await createFixture({ env: { SCHEDULER_MAX_RESENDS: '1', MAPELITES_SEED_POPULATION_SIZE: '0' } });
    try {
      const experimentId = fixture.settings.experiment.uuid;
      const boss = fixture.boss;
      const queue = fixture.settings.queue.name;
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      const [baseline] = await jobsOf(fixture);
      await fixture.pool.query(`UPDATE evolution_jobs SET status = 'cancelled' WHERE id = $1`, [baseline.id]);
      const jobs = await Promise.all([0, 1, 2, 3, 4].map(() => insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit })));
      await scheduler.tick();
      const queued = async (id: string) => (await getJob(fixture.pool, id))!;
      const [vanishing, failing, cancelled, completedEarly, healthy] = await Promise.all(jobs.map((j) => queued(j.id)));
      assert.ok([vanishing, failing, cancelled, completedEarly, healthy].every((j) => j.status === 'queued' && j.queueJobId));

      await boss.deleteJob(queue, vanishing.queueJobId!);
      await boss.fail(queue, failing.queueJobId!, { message: 'worker process was killed' });
      await fixture.pool.query(`UPDATE evolution_jobs SET status = 'running' WHERE id = $1`, [failing.id]);
      await boss.cancel(queue, cancelled.queueJobId!);
      // A worker took the job and completed the queue job, but the row never left running.
      await fixture.pool.query(`UPDATE evolution_jobs SET status = 'running' WHERE id = $1`, [completedEarly.id]);
      await boss.complete(queue, completedEarly.queueJobId!, {}, { includeQueued: true });
      assert.equal((await boss.findJobs(queue, { id: completedEarly.queueJobId! }))[0].state, 'completed');

      let tick = await scheduler.tick();
      assert.deepEqual(tick.reconciled, { checked: 5, failed: 3, resent: 1 });
      const resent = await queued(vanishing.id);
      assert.equal(resent.status, 'queued');
      assert.notEqual(resent.queueJobId, vanishing.queueJobId);
      assert.equal(resent.resends, 1);
      assert.equal(resent.payload.resends, undefined, 'counted in its column, not the payload');
      assert.match(resent.lastError!, /vanished .* sent again/);
      assert.equal((await boss.findJobs(queue, { id: resent.queueJobId! })).length, 1);

      const failed = await queued(failing.id);
      assert.equal(failed.status, 'failed');
      assert.match(failed.lastError!, /the queue gave up on it .*: worker process was killed/);
      assert.ok(failed.finishedAt);
      assert.equal((await queued(cancelled.id)).status, 'failed');
      assert.match((await queued(cancelled.id)).lastError!, /cancelled/);
      assert.equal((await queued(completedEarly.id)).status, 'failed');
      assert.match((await queued(completedEarly.id)).lastError!, /completed but the job was left running/);
      assert.equal((await queued(healthy.id)).status, 'queued', 'a job whose queue job is waiting is left alone');

      // Vanishing again exhausts SCHEDULER_MAX_RESENDS=1.
      await boss.deleteJob(queue, resent.queueJobId!);
      tick = await scheduler.tick();
      assert.deepEqual(tick.reconciled, { checked: 2, failed: 1, resent: 0 });
      assert.match((await queued(vanishing.id)).lastError!, /already sent again 1 times/);
    } finally {
      await fixture.close();
    }
  });
});

describe('seeded sampling', () => {
  test('two experiments with the same MAPELITES_SAMPLER_SEED and archive schedule the same jobs', async () => {
    const fixture = await createFixture({ env: { MAPELITES_SAMPLER_SEED: '1234', SCHEDULER_MAX_UNFINISHED_JOBS: '40', SCHEDULER_SCHEDULE_BATCH_SIZE: '6', MAPELITES_ISLANDS: '2' } });
    try {
      const run = async (experiment: string, seed: string) => {
        const settings = fixture.settingsWith({ EXPERIMENT_ID: experiment, MAPELITES_SAMPLER_SEED: seed });
        const experimentId = settings.experiment.uuid;
        const scheduler = schedulerFor(fixture, settings);
        await scheduler.start();
        const [baseline] = await jobsOf(fixture, settings);
        await completeJob(fixture.pool, experimentId, baseline.id, fixture.rootCommit, { combined_score: 0.1, sum_radii: 0.1, validity: 1 });
        for (let i = 0; i < 8; i++) {
          const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit, island: i % 2 });
          await completeJob(fixture.pool, experimentId, job.id, `c${i}`, { combined_score: i, sum_radii: (i * 0.37) % 2.7, validity: i % 2 });
        }
        const before = new Set((await jobsOf(fixture, settings)).map((j) => j.id));
        await scheduler.tick();
        await scheduler.tick();
        return (await jobsOf(fixture, settings))
          .filter((j) => !before.has(j.id))
          .map((j) => `${j.island}:${j.baseCommit}<-${j.inspirations.join(',')}`)
          // Jobs of one tick share a transaction timestamp, so compare them as a multiset.
          .sort();
      };
      const a = await run('seeded-a', '1234');
      const b = await run('seeded-b', '1234');
      const c = await run('seeded-c', '99');
      assert.equal(a.length, 12);
      assert.deepEqual(a, b);
      assert.notDeepEqual(a, c);
      assert.equal(a.filter((entry) => entry.startsWith('0:')).length, 6, 'islands taken round-robin');
    } finally {
      await fixture.close();
    }
  });
});

describe('embedding descriptor through the scheduler', () => {
  test('ingests pushed commits and commits only in the worker clone', async () => {
    const fixture = await createFixture({
      env: { MAPELITES_BEHAVIOR_DESCRIPTOR: 'embedding', MAPELITES_FEATURE_DIMENSIONS: '', MAPELITES_SEED_POPULATION_SIZE: '0', WORKER_REPO_PUSH: 'false' },
    });
    try {
      const { settings, pool } = fixture;
      const experimentId = settings.experiment.uuid;
      const scheduler = schedulerFor(fixture);
      await scheduler.start();
      const [baseline] = await jobsOf(fixture);
      await completeJob(pool, experimentId, baseline.id, fixture.rootCommit, { combined_score: 0.2 });
      const pushed = await insertJob(pool, { experimentId, baseCommit: fixture.rootCommit });
      const pushedCommit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': 'export const radius = 0.2;\n' }, `evolution/job/x/${pushed.id}`);
      await completeJob(pool, experimentId, pushed.id, pushedCommit, { combined_score: 0.5 });
      // A worker that does not push leaves its branch in its own clone (WORKER_REPO_WORKTREE).
      const local = await insertJob(pool, { experimentId, baseCommit: fixture.rootCommit });
      git(fixture.root, 'clone', '--quiet', fixture.remote, settings.worker.git.baseClone);
      git(settings.worker.git.baseClone, 'checkout', '--quiet', '-b', `evolution/job/x/${local.id}`, fixture.rootCommit);
      git(settings.worker.git.baseClone, 'commit', '--quiet', '--allow-empty', '-m', 'local only');
      const localCommit = git(settings.worker.git.baseClone, 'rev-parse', 'HEAD');
      await completeJob(pool, experimentId, local.id, localCommit, { combined_score: 0.6 });

      const tick = await scheduler.tick();
      assert.equal(tick.ingestFailed, 0);
      assert.equal(tick.ingested + tick.rejected, 3);
      for (const id of [baseline.id, pushed.id, local.id]) {
        const job = await getJob(pool, id);
        assert.notEqual(job?.ingestionStatus, 'failed', job?.ingestionReason ?? '');
        assert.equal((job?.ingestionCell as { cell: number[] }).cell.length, 4);
      }
      const summary = await scheduler.finish();
      assert.equal(summary.pushed, false, 'WORKER_REPO_PUSH=false keeps the best branch local');
      assert.equal(git(scheduler.repository.directory, 'rev-parse', `refs/heads/${summary.branch}`), summary.best?.commit);
    } finally {
      await fixture.close();
    }
  });
});
