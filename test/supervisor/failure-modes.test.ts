import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type QueueClient, SLEEPING_AGENT } from '../helpers/experiment.ts';
import { killAllSpawned, NODE, pidAlive, readLog, spawnLoreley, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';

/** What happens when things go wrong in ways a restart cannot fix, or a child dies outright. */


const queues: QueueClient[] = [];
const strays: number[] = [];
const running: Spawned[] = [];

after(async () => {
  for (const spawned of running) spawned.killGroup('SIGKILL');
  killAllSpawned();
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  }
  for (const queue of queues) await queue.close();
  await stopTestServer();
});

test('a SIGKILLed worker does not leave its agent running: the supervisor ends the command group', async (t) => {
  const fixture = await createFixture({ experimentId: 'orphans' });
  const agent = path.join(fixture.root, 'sleeping-agent.mjs');
  writeFileSync(agent, SLEEPING_AGENT);
  Object.assign(fixture.env, { WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, fixture.recordsDir]), SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '100' });
  const queue = await openQueue(fixture);
  queues.push(queue);
  const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);

  const jobId = await queue.enqueue({});
  const recordFile = path.join(fixture.recordsDir, `${jobId}.agent.json`);
  await waitFor('the agent to start', () => existsSync(recordFile), 60_000, 20, supervisor);
  const record = JSON.parse(readFileSync(recordFile, 'utf8')) as { pid: number; grandchild: number };
  strays.push(record.pid, record.grandchild);
  const workerPid = (await queue.pool.query<{ pid: number }>('SELECT pid FROM workers WHERE worker_id = $1', ['worker0001'])).rows[0].pid;

  const killed = performance.now();
  process.kill(workerPid, 'SIGKILL');
  await waitFor('the agent and its grandchild to be gone', () => !pidAlive(record.pid) && !pidAlive(record.grandchild), 5000, 20, supervisor);
  t.diagnostic(`agent group gone ${Math.round(performance.now() - killed)} ms after the worker was killed`);
  const supervisorLog = readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
  assert.ok(supervisorLog.some((line) => line.msg === 'killed a command the dead child left running'), 'the supervisor says what it killed');
  supervisor.killGroup('SIGTERM');
  await supervisor.waitExit(30_000);
});

test('a scheduler whose settings cannot work stops the supervisor at once with exit 1 (no crash loop)', async () => {
  const fixture = await createFixture({ experimentId: 'bad-root', env: { MAPELITES_EXPERIMENT_ROOT_COMMIT: 'f'.repeat(40) } });
  const supervisor = spawnSupervisor(['--workers', '1'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);
  const exit = await supervisor.waitExit(60_000);
  assert.equal(exit.code, 1, supervisor.stderr().slice(-2000));
  const queue = await openQueue(fixture);
  queues.push(queue);
  const log = readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
  const messages = log.map((line) => String(line.msg));
  assert.ok(messages.some((msg) => /scheduler0001 cannot run with these settings/.test(msg)), messages.join('\n'));
  assert.ok(!messages.some((msg) => /restarting in/.test(msg) && /scheduler0001/.test(msg)), 'the scheduler was not restarted');
  assert.match(supervisor.stderr(), /MAPELITES_EXPERIMENT_ROOT_COMMIT=f{40} is not a commit of/);
});

test('loreley scheduler --once does not wait behind a running scheduler', async () => {
  const fixture = await createFixture({ experimentId: 'once-standby', env: { SCHEDULER_LOCK_POLL_SECONDS: '0.2' } });
  const holder = spawnLoreley(['scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(holder);
  const queue = await openQueue(fixture);
  queues.push(queue);
  await waitFor('the first scheduler to hold the lock', () => readLog(logDir(fixture, queue.settings, 'scheduler', 'scheduler0001')).some((line) => /scheduler lock held/.test(String(line.msg))), 60_000, 50, holder);
  const once = spawnLoreley(['scheduler', '--once', '--worker-id', 'scheduler0002'], { env: fixture.env, cwd: fixture.root });
  running.push(once);
  const exit = await once.waitExit(30_000);
  assert.equal(exit.code, 1);
  assert.match(once.stderr(), /another scheduler is running this experiment; --once does not wait for it/);
  assert.doesNotMatch(once.stderr(), /\n\s+at /, 'no stack trace');
  holder.killGroup('SIGTERM');
  await holder.waitExit(30_000);
});
