import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createFixture, openQueue } from '../helpers/experiment.ts';
import { pidAlive, spawnLoreley, spawnSupervisor, waitFor } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture, cleanUpAtEnd, stageRecord, uptimeSeconds, useStallingCommands } from './helpers.ts';

/**
 * Item 1 (a whole host gone) and item 5 (dead slots in `loreley status`) of issue 7.
 *
 * A worker with no supervisor above it (as on a host that died with its supervisor) is SIGKILLed
 * in the middle of a job: nobody hands its job back but the scheduler, which must do so within
 * about one queue heartbeat interval, with the attempt given back and the default retry setting.
 */

const { running, queues } = cleanUpAtEnd();

const HEARTBEAT_SECONDS = 10;

test('a worker whose host died (no supervisor to hand its job back): the scheduler hands the job back within about one heartbeat interval', async (t) => {
  const fixture = await createFixture({
    experimentId: 'host-lost',
    env: { TASKS_WORKER_HEARTBEAT_SECONDS: String(HEARTBEAT_SECONDS), SCHEDULER_POLL_INTERVAL_SECONDS: '0.5', SCHEDULER_MAX_TOTAL_JOBS: '0' },
  });
  useStallingCommands(fixture);
  const queue = await openQueue(fixture);
  queues.push(queue);
  // Both jobs exist before the scheduler starts, so with a budget of 0 it schedules nothing of its
  // own but the baseline, and keeps reconciling until they are done.
  const jobIds = [await queue.enqueue({ stall: 'agent' }), await queue.enqueue({ stall: 'agent' })];
  const scheduler = spawnLoreley(['scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(scheduler);

  const handedBackAfterMs: number[] = [];
  const pids: number[] = [];
  for (const [round, jobId] of jobIds.entries()) {
    const worker = spawnLoreley(['worker', '--worker-id', `host${round + 1}-worker0001`], { env: fixture.env, cwd: fixture.root });
    running.push(worker);
    const agent = await waitFor('the agent to stall', () => stageRecord(fixture, jobId, 'agent'), 60_000, 20, worker);
    pids.push(agent.pid, worker.pid);
    // The host dies: the worker and the commands it started, at once.
    worker.killGroup('SIGKILL');
    process.kill(-agent.pid, 'SIGKILL');
    const killed = performance.now();
    await waitFor('the job to be handed back by the scheduler', async () => (await queue.job(jobId)).status === 'queued', 60_000, 100, scheduler);
    handedBackAfterMs.push(Math.round(performance.now() - killed));
    const job = await queue.job(jobId);
    assert.equal(job.attempts, 0, 'the lost attempt was given back');
    assert.match(job.lastError ?? '', /heartbeat/);
  }
  t.diagnostic(`host gone → job handed back by the scheduler (ms): ${handedBackAfterMs.join(', ')} (queue heartbeat ${HEARTBEAT_SECONDS} s)`);
  assert.ok(Math.max(...handedBackAfterMs) < (HEARTBEAT_SECONDS + 15) * 1000, 'within about one heartbeat interval (plus the sweep and a tick)');

  // A healthy host takes the jobs and finishes them.
  const healthy = spawnLoreley(['worker', '--worker-id', 'host9-worker0001'], { env: fixture.env, cwd: fixture.root });
  running.push(healthy);
  await waitFor('every job to succeed and be ingested', async () => {
    const { rows } = await queue.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM evolution_jobs WHERE status = 'succeeded' AND ingestion_status <> 'pending'");
    return rows[0].n === 3;
  }, 90_000, 100, healthy);
  for (const jobId of jobIds) assert.equal((await queue.job(jobId)).attempts, 1);
  for (const spawned of [healthy, scheduler]) {
    process.kill(spawned.pid, 'SIGTERM');
    await spawned.waitExit(30_000);
  }
  assertAudit(await auditFixture(fixture, queue, { pids, expectIngestion: true }));
});

test('a slot killed while young again and again is errored, and `loreley status` shows it errored, not idle', async () => {
  const fixture = await createFixture({
    experimentId: 'slot-errored',
    env: { SUPERVISOR_CRASH_LOOP_MAX_RESTARTS: '1', SUPERVISOR_MIN_UPTIME_SECONDS: '600', SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '100' },
  });
  const queue = await openQueue(fixture);
  queues.push(queue);
  const supervisor = spawnSupervisor(['--workers', '2', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);
  const rowOf = async (workerId: string) => (await queue.pool.query<{ pid: number; state: string }>('SELECT pid, state FROM workers WHERE worker_id = $1', [workerId])).rows[0];
  for (let kill = 0; kill < 2; kill += 1) {
    const row = await waitFor('worker0001 to be idle', async () => {
      const current = await rowOf('worker0001');
      return current?.state === 'idle' && pidAlive(current.pid) ? current : undefined;
    }, 60_000, 50, supervisor);
    assert.ok(uptimeSeconds(row.pid) < 600);
    process.kill(row.pid, 'SIGKILL');
    // Dead until its replacement reports in (which may come first when the restart is quick).
    if (kill === 0) await waitFor('the dead slot recorded or replaced', async () => { const current = await rowOf('worker0001'); return current.state === 'dead' || current.pid !== row.pid; }, 10_000, 20, supervisor);
  }
  await waitFor('worker0001 recorded errored', async () => (await rowOf('worker0001'))?.state === 'errored', 10_000, 50, supervisor);
  const status = spawnLoreley(['status'], { env: fixture.env, cwd: fixture.root });
  assert.equal((await status.waitExit(30_000)).code, 0, status.stderr());
  assert.match(status.stdout(), /worker0001\s.*errored/);
  assert.match(status.stdout(), /worker0002\s.*idle/);
  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(30_000)).code, 0);
});
