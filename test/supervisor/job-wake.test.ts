import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import type { Pool } from '../../src/shared/db/pool.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type QueueClient } from '../helpers/experiment.ts';
import { killAllSpawned, readLog, spawnLoreley, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * The NOTIFY herd fix: one LISTEN per host. A supervisor LISTENs on one connection and wakes one
 * idle worker per sent job over IPC; its workers' queues do not LISTEN. Jobs sent one at a time
 * to idle supervised workers are all done; a second host has its own one listener; a LISTEN
 * connection killed by the server comes back; a worker SIGKILLed between its wake and its fetch
 * loses nothing (the job stays queued, no attempt used). A `loreley worker` run by hand LISTENs itself.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

/**
 * Backends of the experiment's database that LISTEN, by application_name. Postgres shows no
 * other session's channels, so a listener is known by its last statement: `LISTEN …`, or the
 * periodic check of its registration (pg-boss's and ours both read `pg_listening_channels()`).
 * The test's own queue client (which LISTENs, as a `loreley worker` by hand does) is left out.
 */
async function listeners(pool: Pool): Promise<string[]> {
  const { rows } = await pool.query<{ name: string }>(
    `SELECT application_name AS name FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name <> 'loreley-test-queue'
        AND (query ILIKE 'LISTEN %' OR query LIKE '%pg_listening_channels()%')
      ORDER BY 1`,
  );
  return rows.map((row) => row.name);
}

async function idleWorkers(queue: QueueClient, host?: string): Promise<number> {
  const { rows } = await queue.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM workers WHERE experiment_id = $1 AND role = 'worker' AND state = 'idle' AND ($2::text IS NULL OR host = $2)`,
    [queue.settings.experiment.uuid, host ?? null],
  );
  return rows[0].n;
}

async function allFinished(queue: QueueClient, ids: readonly string[]): Promise<boolean> {
  for (const id of ids) {
    const job = await queue.job(id);
    if (job.status === 'failed') throw new Error(`job ${id} failed: ${job.lastError}`);
    if (job.status !== 'succeeded') return false;
  }
  return true;
}

/** Sends `count` jobs, each in its own transaction (its own NOTIFY), one after another. */
async function sendOneAtATime(queue: QueueClient, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1) ids.push(await queue.enqueue());
  return ids;
}

function wakeLine(logsDir: string, queue: QueueClient): { wakes: number; noneIdle: number } | undefined {
  const line = readLog(path.join(logsDir, queue.settings.experiment.namespace, 'supervisor', 'supervisor')).find((entry) => entry.msg === 'stopped listening for sent jobs');
  return line ? { wakes: Number(line.wakes), noneIdle: Number(line.noneIdle) } : undefined;
}

test('one LISTEN per host: jobs sent one at a time to idle supervised workers are all done, on two hosts', async (t) => {
  const fixture = await createFixture({ experimentId: 'job-wake', env: { SUPERVISOR_SPARE_WORKER: 'false' } });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const hostA = spawnSupervisor(['--workers', '4', '--no-scheduler'], { env: { ...fixture.env, LORELEY_HOST_ID: 'host-a' }, cwd: fixture.root });
  after(() => hostA.killGroup('SIGKILL'));
  await waitFor('4 idle workers on host-a', async () => (await idleWorkers(queue, 'host-a')) === 4, 60_000, 50, hostA);
  await waitFor('one listener', async () => (await listeners(queue.pool)).length === 1, 20_000, 50, hostA);
  assert.deepEqual(await listeners(queue.pool), ['loreley-supervisor-listen'], 'the supervisor listens; its workers do not');

  const first = await sendOneAtATime(queue, 8);
  await waitFor('8 jobs done on host-a', () => allFinished(queue, first), 60_000, 100, hostA);

  // Its own logs, data and clone: two hosts on one machine would share them otherwise.
  const logsB = path.join(fixture.root, 'host-b');
  const hostB = spawnSupervisor(['--workers', '2', '--no-scheduler'], { env: { ...fixture.env, LORELEY_HOST_ID: 'host-b', LOGS_BASE_DIR: logsB, LORELEY_DATA_DIR: path.join(logsB, 'data'), WORKER_REPO_WORKTREE: path.join(logsB, 'clone') }, cwd: fixture.root });
  after(() => hostB.killGroup('SIGKILL'));
  await waitFor('2 idle workers on host-b', async () => (await idleWorkers(queue, 'host-b')) === 2, 60_000, 50, hostB);
  await waitFor('two listeners', async () => (await listeners(queue.pool)).length === 2, 20_000, 50, hostB);
  assert.deepEqual(await listeners(queue.pool), ['loreley-supervisor-listen', 'loreley-supervisor-listen'], 'one per host');
  await waitFor('6 idle workers', async () => (await idleWorkers(queue)) === 6, 30_000, 50, hostA);

  const second = await sendOneAtATime(queue, 12);
  await waitFor('12 more jobs done on two hosts', () => allFinished(queue, second), 60_000, 100, hostA);

  for (const host of [hostA, hostB]) process.kill(host.pid, 'SIGTERM');
  assert.equal((await hostA.waitExit(60_000)).code, 0);
  assert.equal((await hostB.waitExit(60_000)).code, 0);
  const a = wakeLine(fixture.logsDir, queue);
  const b = wakeLine(path.join(logsB, 'logs'), queue);
  t.diagnostic(`wakes: host-a ${JSON.stringify(a)}, host-b ${JSON.stringify(b)}`);
  assert.ok(a && a.wakes + a.noneIdle >= first.length + second.length, 'host-a heard every send');
  assert.ok(b && b.wakes + b.noneIdle >= second.length, 'host-b heard every send of its time');
  assert.ok(a.wakes > 0 && b.wakes > 0, 'both woke workers');
});

test('the LISTEN connection comes back after the server ends it, and a worker killed between wake and fetch loses no job', async () => {
  const fixture = await createFixture({ experimentId: 'job-wake-faults', env: { SUPERVISOR_SPARE_WORKER: 'false', SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '0', LOG_LEVEL: 'debug' } });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const supervisor: Spawned = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  after(() => supervisor.killGroup('SIGKILL'));
  await waitFor('the worker idle', async () => (await idleWorkers(queue)) === 1, 60_000, 50, supervisor);
  await waitFor('one listener', async () => (await listeners(queue.pool)).length === 1, 20_000, 50, supervisor);

  // The server ends the LISTEN connection (as a restart or an operator's pg_terminate_backend would).
  const { rows: ended } = await queue.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'loreley-supervisor-listen'`,
  );
  assert.equal(ended.length, 1);
  await queue.pool.query('SELECT pg_terminate_backend($1)', [ended[0].pid]);
  await waitFor('a new LISTEN connection', async () => {
    const { rows } = await queue.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'loreley-supervisor-listen' AND query ILIKE 'LISTEN %'`,
    );
    return rows.length === 1 && rows[0].pid !== ended[0].pid;
  }, 30_000, 50, supervisor);
  const log = () => readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
  assert.ok(log().some((line) => line.msg === 'lost the LISTEN connection: workers poll until it is back'));
  const afterReconnect = await sendOneAtATime(queue, 3);
  await waitFor('jobs done after the reconnection', () => allFinished(queue, afterReconnect), 60_000, 100, supervisor);

  // Between wake and fetch: the worker is frozen, the job is sent (the supervisor wakes it: the
  // message waits in its channel), and the worker is killed before it could fetch.
  await waitFor('the worker idle again', async () => (await idleWorkers(queue)) === 1, 30_000, 50, supervisor);
  const { rows: worker } = await queue.pool.query<{ pid: number }>(`SELECT pid FROM workers WHERE experiment_id = $1 AND role = 'worker'`, [queue.settings.experiment.uuid]);
  process.kill(worker[0].pid, 'SIGSTOP');
  const woken = () => log().filter((line) => line.msg === 'job sent: woke an idle worker').length;
  const wokenBefore = woken();
  const [jobId] = await sendOneAtATime(queue, 1);
  await waitFor('the supervisor woke the frozen worker', () => woken() > wokenBefore, 10_000, 20, supervisor);
  process.kill(worker[0].pid, 'SIGKILL');
  const job = await waitFor('the job done by the restarted worker', async () => {
    const row = await queue.job(jobId);
    return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
  }, 60_000, 100, supervisor);
  assert.equal(job.status, 'succeeded', job.lastError ?? '');
  const [queueJob] = (await queue.queueJobs()).filter((row) => row.data.jobId === jobId);
  assert.equal(queueJob.retry_count, 0, 'no attempt was used');

  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(60_000)).code, 0);
});

test('a `loreley worker` run by hand (no supervisor) keeps its own LISTEN and is woken by it', async () => {
  const fixture = await createFixture({ experimentId: 'job-wake-by-hand' });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const worker = spawnLoreley(['worker', '--worker-id', 'byhand0001'], { env: fixture.env, cwd: fixture.root });
  after(() => worker.killGroup('SIGKILL'));
  await waitFor('the worker idle', async () => (await idleWorkers(queue)) === 1, 60_000, 50, worker);
  await waitFor('its LISTEN', async () => (await listeners(queue.pool)).length === 1, 20_000, 50, worker);
  assert.deepEqual(await listeners(queue.pool), ['loreley-byhand0001-queue']);
  const ids = await sendOneAtATime(queue, 3);
  await waitFor('its jobs done', () => allFinished(queue, ids), 60_000, 100, worker);
  process.kill(worker.pid, 'SIGTERM');
  assert.equal((await worker.waitExit(30_000)).code, 0);
});
