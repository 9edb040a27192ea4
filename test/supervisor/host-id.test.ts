import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, openQueue } from '../helpers/experiment.ts';
import { killAllSpawned, pidAlive, spawnSupervisor, waitFor } from '../helpers/processes.ts';

/**
 * With a host id (--host-id / LORELEY_HOST_ID) the supervisor records a dead or errored slot under
 * that host, in the same `workers` row the child writes, not under the machine's name beside it.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

test('--host-id: the errored slot is recorded in the row its child wrote, under the host id', async () => {
  const fixture = await createFixture({
    experimentId: 'host-id-slot',
    env: { SUPERVISOR_CRASH_LOOP_MAX_RESTARTS: '1', SUPERVISOR_MIN_UPTIME_SECONDS: '600', SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '100' },
  });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const supervisor = spawnSupervisor(['--workers', '2', '--no-scheduler', '--host-id', 'host-a'], { env: fixture.env, cwd: fixture.root });
  after(() => supervisor.killGroup('SIGKILL'));
  const rowsOf = async (workerId: string) =>
    (await queue.pool.query<{ pid: number; state: string; host: string }>('SELECT pid, state, host FROM workers WHERE experiment_id = $1 AND worker_id = $2', [queue.settings.experiment.uuid, workerId])).rows;
  let killed = 0;
  for (let kill = 0; kill < 2; kill += 1) {
    const row = await waitFor('worker0001 to be idle (a new child after a kill)', async () => {
      const rows = await rowsOf('worker0001');
      return rows.length === 1 && rows[0].state === 'idle' && rows[0].pid !== killed && pidAlive(rows[0].pid) ? rows[0] : undefined;
    }, 60_000, 50, supervisor);
    killed = row.pid;
    assert.equal(row.host, 'host-a', 'the child writes under the host id');
    process.kill(row.pid, 'SIGKILL');
  }
  const rows = await waitFor('worker0001 recorded errored', async () => {
    const current = await rowsOf('worker0001');
    return current.some((row) => row.state === 'errored') ? current : undefined;
  }, 10_000, 50, supervisor);
  assert.deepEqual(rows.map((row) => ({ host: row.host, state: row.state })), [{ host: 'host-a', state: 'errored' }], 'one row, under the host id');
  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(30_000)).code, 0);
});
