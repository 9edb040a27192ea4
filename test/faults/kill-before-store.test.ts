import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { createFixture, openQueue } from '../helpers/experiment.ts';
import { pidAlive, spawnSupervisor, waitFor } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture, cleanUpAtEnd, stageRecord, uptimeSeconds, useStallingCommands } from './helpers.ts';

/**
 * Issue 7, "SIGKILL a worker between commit and store", hit exactly: the test holds the job's row
 * lock, so the worker's store transaction (commit card, metrics, artifacts, then the job's status)
 * blocks after the evaluator has finished. The worker is SIGKILLed while it waits there, the lock
 * is released, and the job must come back, run again and be recorded exactly once.
 */

const { running, queues } = cleanUpAtEnd();

const REPEATS = 3;

test('a worker SIGKILLed after its evaluation, while it stores the result: the job runs again and is recorded once', async (t) => {
  const fixture = await createFixture({ experimentId: 'kill-before-store', env: { SUPERVISOR_MIN_UPTIME_SECONDS: '1' } });
  delete fixture.env.TASKS_WORKER_MAX_RETRIES;
  useStallingCommands(fixture);
  const queue = await openQueue(fixture);
  queues.push(queue);
  assert.equal(queue.settings.queue.maxRetries, 0, 'the default retry setting');
  const schema = queue.settings.database.schema;
  const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);
  const pids: number[] = [];

  for (let round = 0; round < REPEATS; round += 1) {
    const jobId = await queue.enqueue({ evaluatorMs: 1000 });
    const evaluator = await waitFor('the evaluator to start', () => stageRecord(fixture, jobId, 'evaluator'), 60_000, 10, supervisor);
    const workerPid = evaluator.ppid;
    pids.push(workerPid, evaluator.pid);

    const holder = new pg.Client(fixture.databaseUrl);
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT id FROM ${schema}.evolution_jobs WHERE id = $1 FOR UPDATE`, [jobId]);
      // The evaluation ends; the worker then waits on our lock inside its store transaction.
      await waitFor('the evaluator to exit', () => !pidAlive(evaluator.pid), 30_000, 20, supervisor);
      await waitFor('the worker to block in its store transaction', async () => {
        const waiting = await holder.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name LIKE 'loreley-worker%'`,
        );
        return waiting.rows[0].n > 0;
      }, 30_000, 20, supervisor);
      await waitFor(`worker ${workerPid} past min-uptime`, () => uptimeSeconds(workerPid) >= 2, 10_000, 100);
      process.kill(workerPid, 'SIGKILL');
      await waitFor('the worker to be gone', () => !pidAlive(workerPid), 10_000, 10);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }

    const done = await waitFor(`job ${jobId} to finish`, async () => {
      const job = await queue.job(jobId);
      return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
    }, 90_000, 50, supervisor);
    assert.equal(done.status, 'succeeded', `round ${round + 1}: ${done.lastError ?? ''}`);
    assert.equal(done.attempts, 1, 'the lost attempt was given back');
    assert.ok(stageRecord(fixture, jobId, 'evaluator', 2), 'the job was evaluated again after the kill');
  }
  t.diagnostic(`${REPEATS} workers killed while storing; every job re-ran and succeeded once`);

  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(60_000)).code, 0);
  assertAudit(await auditFixture(fixture, queue, { pids }));
});
