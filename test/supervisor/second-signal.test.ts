import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type QueueClient, SLEEPING_AGENT } from '../helpers/experiment.ts';
import { killAllSpawned, NODE, pidAlive, readLog, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * A second SIGTERM during a drain stops at once: the supervisor does not wait out a long
 * --drain-timeout; the job in hand is handed back to the queue (not failed, attempt returned) and
 * the agent, with what it started, is gone.
 */


let queue: QueueClient | undefined;
let supervisor: Spawned | undefined;
const strays: number[] = [];

after(async () => {
  supervisor?.killGroup('SIGKILL');
  killAllSpawned();
  for (const pid of strays) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone, as it should be.
    }
  }
  await queue?.close();
  await stopTestServer();
});

test('a second SIGTERM during a long drain stops at once: exit 0, the job handed back, no agent left', async (t) => {
  const fixture = await createFixture({ experimentId: 'second-signal' });
  const agent = path.join(fixture.root, 'sleeping-agent.mjs');
  writeFileSync(agent, SLEEPING_AGENT);
  Object.assign(fixture.env, { WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, fixture.recordsDir]) });
  const q = (queue = await openQueue(fixture));
  const running = (supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler', '--drain-timeout', '60'], { env: fixture.env, cwd: fixture.root }));

  const jobId = await q.enqueue({});
  const recordFile = path.join(fixture.recordsDir, `${jobId}.agent.json`);
  await waitFor('the agent to start', () => existsSync(recordFile), 60_000, 20, running);
  const record = JSON.parse(readFileSync(recordFile, 'utf8')) as { pid: number; grandchild: number };
  strays.push(record.pid, record.grandchild);
  assert.equal((await q.job(jobId)).status, 'running');
  const workerPid = (await q.pool.query<{ pid: number }>('SELECT pid FROM workers WHERE worker_id = $1', ['worker0001'])).rows[0].pid;
  const [firstQueueJob] = await q.queueJobs();

  const signalled = performance.now();
  process.kill(running.pid, 'SIGTERM');
  const workerLog = () => readLog(logDir(fixture, q.settings, 'worker', 'worker0001'));
  // The first signal starts the drain; the worker waits for its job (60 s of drain timeout).
  await waitFor('the worker to start draining', () => workerLog().some((line) => line.msg === 'waiting for the job in hand'), 5000, 20, running);
  // The worker is waiting for its job: the drain has begun and did not end the job.
  assert.equal(running.child.exitCode, null, 'still draining after the first signal');
  assert.ok(pidAlive(record.pid), 'the agent is still running after the first signal');

  process.kill(running.pid, 'SIGTERM');
  const exit = await running.waitExit(10_000);
  const tookMs = Math.round(performance.now() - signalled);
  t.diagnostic(`exited ${tookMs} ms after the first SIGTERM (drain timeout 60 s)`);
  assert.equal(exit.code, 0, running.stderr().slice(-2000));
  assert.ok(tookMs < 8000, `stopped at once, not after the drain timeout (${tookMs} ms)`);

  // The job is handed back, not failed: queued, attempt returned, a fresh queue job waiting.
  const job = await q.job(jobId);
  assert.equal(job.status, 'queued', `status ${job.status}, last_error ${job.lastError}`);
  assert.equal(job.attempts, 0);
  assert.equal(job.resultCommit, null);
  assert.equal(job.workerId, null);
  const queueJobs = await q.queueJobs();
  assert.equal(queueJobs.length, 2, JSON.stringify(queueJobs));
  const [old, fresh] = queueJobs;
  assert.equal(old.id, firstQueueJob.id);
  assert.equal(old.state, 'completed', 'the interrupted queue job is closed, not failed');
  assert.equal(fresh.state, 'created', 'a fresh queue job waits for the next worker');
  assert.equal(fresh.data.jobId, jobId);
  assert.equal(fresh.retry_count, 0);
  assert.equal(job.queueJobId, fresh.id);

  // Nothing is left running: the worker, the agent and the agent's grandchild.
  await waitFor('the worker, the agent and its grandchild to be gone', () => ![workerPid, record.pid, record.grandchild].some(pidAlive), 3000);
  assert.ok(!existsSync(path.join(`${fixture.worktree}-worktrees`, jobId)), 'the worktree is removed');

  const supervisorLines = readLog(logDir(fixture, q.settings, 'supervisor', 'supervisor'));
  assert.ok(supervisorLines.some((line) => line.msg === 'draining children'));
  assert.ok(supervisorLines.some((line) => line.msg === 'second stop request: stopping children now'));
  assert.ok(!supervisorLines.some((line) => line.msg === 'child did not stop in time: killing it'), 'the worker stopped by itself, it was not killed');
  assert.equal(supervisorLines.at(-1)?.msg, 'supervisor stopped');
  const lines = workerLog();
  assert.ok(lines.some((line) => line.msg === 'job handed back to the queue' && line.jobId === jobId));
  assert.ok(!lines.some((line) => line.msg.startsWith('job failed')), 'nothing is logged as a failure');
});
