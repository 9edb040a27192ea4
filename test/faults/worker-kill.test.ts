import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createFixture, logDir, openQueue } from '../helpers/experiment.ts';
import { git } from '../helpers/git.ts';
import { pidAlive, readLog, spawnSupervisor, waitFor } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture, cleanUpAtEnd, stageRecord, uptimeSeconds, useStallingCommands } from './helpers.ts';

/**
 * Item 1 of issue 7, done for real: a supervised worker is SIGKILLed in the middle of a job (during
 * the agent, during the evaluator, and after its commit was pushed but before the result was
 * stored), with the default retry setting (TASKS_WORKER_MAX_RETRIES=0). The job must come back at
 * once, run again, and succeed; no slot is errored although it is killed again and again; and the
 * audit balances at the end.
 */

const { running, queues } = cleanUpAtEnd();

const REPEATS = 3;

test('a worker SIGKILLed during the agent, the evaluator or after its commit: the job runs again at once and succeeds', async (t) => {
  const fixture = await createFixture({ experimentId: 'worker-kill', env: { SUPERVISOR_MIN_UPTIME_SECONDS: '1', TASKS_WORKER_MAX_RETRIES: undefined } });
  delete fixture.env.TASKS_WORKER_MAX_RETRIES;
  useStallingCommands(fixture);
  const queue = await openQueue(fixture);
  queues.push(queue);
  assert.equal(queue.settings.queue.maxRetries, 0, 'the default retry setting');
  const supervisor = spawnSupervisor(['--workers', '2', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);

  const pids: number[] = [];
  const backAfterMs: number[] = [];
  const killOnceReady = async (workerPid: number) => {
    // Past min-uptime: an outside kill of a healthy child must not count towards the crash loop.
    await waitFor(`worker ${workerPid} to have run 1 s`, () => uptimeSeconds(workerPid) >= 2 || !pidAlive(workerPid), 10_000, 100);
    process.kill(workerPid, 'SIGKILL');
    return performance.now();
  };
  const backInQueue = async (jobId: string, killedAt: number) => {
    await waitFor(`job ${jobId} to be handed back`, async () => {
      const job = await queue.job(jobId);
      return job.status !== 'running' || job.workerId === null ? job : undefined;
    }, 30_000, 10, supervisor);
    backAfterMs.push(Math.round(performance.now() - killedAt));
  };

  for (let round = 0; round < REPEATS; round += 1) {
    for (const stage of ['agent', 'evaluator', 'pushed'] as const) {
      const payload = stage === 'pushed' ? { evaluatorMs: 1500 } : { stall: stage };
      const jobId = await queue.enqueue(payload);
      let workerPid: number;
      if (stage === 'pushed') {
        // The commit is pushed before the evaluator runs: kill as soon as the branch is on the remote.
        const branch = `evolution/job/${queue.settings.experiment.namespace}/${jobId}`;
        await waitFor('the job branch on the remote', () => git(fixture.remote, 'branch', '--list', branch) !== '', 60_000, 10, supervisor);
        const evaluator = await waitFor('the evaluator to start', () => stageRecord(fixture, jobId, 'evaluator'), 30_000, 10, supervisor);
        workerPid = evaluator.ppid;
      } else {
        const record = await waitFor(`the ${stage} to start`, () => stageRecord(fixture, jobId, stage), 60_000, 20, supervisor);
        workerPid = record.ppid;
        pids.push(record.pid);
      }
      pids.push(workerPid);
      const killedAt = await killOnceReady(workerPid);
      await backInQueue(jobId, killedAt);
      const done = await waitFor(`job ${jobId} to finish`, async () => {
        const job = await queue.job(jobId);
        return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
      }, 60_000, 50, supervisor);
      assert.equal(done.status, 'succeeded', `${stage} kill, round ${round + 1}: ${done.lastError ?? ''}`);
      assert.equal(done.attempts, 1, 'the lost attempt was given back');
    }
  }
  t.diagnostic(`kill → job handed back (ms): ${backAfterMs.join(', ')}`);
  assert.ok(Math.max(...backAfterMs) < 5000, `handed back within 5 s of the kill (was ${Math.max(...backAfterMs)} ms)`);

  const log = readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
  assert.ok(!log.some((line) => /marked errored/.test(String(line.msg))), 'no slot was marked errored');
  assert.ok(log.filter((line) => /handed back to the queue/.test(String(line.msg))).length >= REPEATS * 2, 'the supervisor handed the jobs back');

  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(60_000)).code, 0);
  assertAudit(await auditFixture(fixture, queue, { pids }));
});
