import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type Fixture, type QueueClient } from '../helpers/experiment.ts';
import { killAllSpawned, pidAlive, readLog, spawnSupervisor, waitFor, type LogLine, type Spawned } from '../helpers/processes.ts';

/**
 * The spare worker (SUPERVISOR_SPARE_WORKER, on by default): once every child is ready the
 * supervisor starts one more worker process that loads its code and waits; a worker that dies is
 * replaced by it (same slot id, the spare's pid), a new spare follows, a job runs on the
 * replacement, and a stop leaves no process behind. Off, there is no spare.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

function supervisorLog(fixture: Fixture, queue: QueueClient): LogLine[] {
  return readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
}

/** Pids of the supervisor's children now, from /proc (each child's ppid is the supervisor). */
function childrenOf(parent: number): number[] {
  const children = readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8').trim();
  return children === '' ? [] : children.split(/\s+/).map(Number);
}

async function workerPid(queue: QueueClient, workerId: string): Promise<number | undefined> {
  const { rows } = await queue.pool.query<{ pid: number; state: string }>(
    'SELECT pid, state FROM workers WHERE experiment_id = $1 AND worker_id = $2',
    [queue.settings.experiment.uuid, workerId],
  );
  return rows[0]?.state === 'idle' ? rows[0].pid : undefined;
}

test('a SIGKILLed worker is replaced by the spare, a new spare follows, jobs run, and a stop leaves nothing', async (t) => {
  const fixture = await createFixture({ experimentId: 'spare', env: { SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '0' } });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  let supervisor: Spawned | undefined = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  after(() => supervisor?.killGroup('SIGKILL'));

  const spareOf = (after: number) =>
    supervisorLog(fixture, queue).filter((line) => line.msg === 'spare worker ready' && Date.parse(line.time) >= after).map((line) => Number(line.childPid)).at(-1);
  const spare = await waitFor('the spare worker', () => spareOf(0), 60_000, 50, supervisor);
  const worker = await waitFor('worker0001 idle', () => workerPid(queue, 'worker0001'), 60_000, 50, supervisor);
  assert.notEqual(spare, worker);
  assert.deepEqual(childrenOf(supervisor.pid).sort(), [spare, worker].sort(), 'the worker and the spare, nothing else');

  const killedAt = Date.now();
  process.kill(worker, 'SIGKILL');
  const replacement = await waitFor('worker0001 back', async () => {
    const pid = await workerPid(queue, 'worker0001');
    return pid !== undefined && pid !== worker ? pid : undefined;
  }, 30_000, 20, supervisor);
  t.diagnostic(`SIGKILL → worker0001 idle again in ${Date.now() - killedAt} ms`);
  assert.equal(replacement, spare, 'the spare took the slot');
  const took = supervisorLog(fixture, queue).find((line) => line.msg === 'the spare worker takes the slot');
  assert.equal(took?.slot, 'worker0001');
  assert.equal(Number(took?.childPid), spare);
  const workerLines = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
  assert.ok(workerLines.some((line) => line.pid === spare && line.msg === 'worker online' && line.workerId === 'worker0001'), 'it logs as worker0001, in its directory');

  const nextSpare = await waitFor('a new spare', () => {
    const pid = spareOf(killedAt);
    return pid !== undefined && pid !== spare ? pid : undefined;
  }, 60_000, 50, supervisor);
  assert.ok(pidAlive(nextSpare));

  const jobId = await queue.enqueue();
  const job = await waitFor('the job to finish on the replacement', async () => {
    const row = await queue.job(jobId);
    return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
  }, 60_000, 100, supervisor);
  assert.equal(job.status, 'succeeded', job.lastError ?? '');

  const children = childrenOf(supervisor.pid);
  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(30_000)).code, 0);
  supervisor = undefined;
  for (const pid of children) assert.ok(!pidAlive(pid), `child ${pid} exited`);
  assert.ok(!pidAlive(nextSpare), 'the spare exited');
});

test('SUPERVISOR_SPARE_WORKER=false: no spare, a dead worker is forked again', async () => {
  const fixture = await createFixture({ experimentId: 'no-spare', env: { SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '0', SUPERVISOR_SPARE_WORKER: 'false' } });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  after(() => supervisor.killGroup('SIGKILL'));
  const worker = await waitFor('worker0001 idle', () => workerPid(queue, 'worker0001'), 60_000, 50, supervisor);
  await waitFor('all children ready', () => supervisorLog(fixture, queue).some((line) => line.msg === 'all children ready'), 30_000, 50, supervisor);
  process.kill(worker, 'SIGKILL');
  const replacement = await waitFor('worker0001 back', async () => {
    const pid = await workerPid(queue, 'worker0001');
    return pid !== undefined && pid !== worker ? pid : undefined;
  }, 30_000, 20, supervisor);
  assert.deepEqual(childrenOf(supervisor.pid), [replacement], 'one child: the worker');
  assert.ok(!supervisorLog(fixture, queue).some((line) => /spare/.test(line.msg)), 'no spare was made');
  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(30_000)).code, 0);
});
