import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type Fixture, type QueueClient, startWorker, stopEverything } from '../helpers/experiment.ts';
import { NODE, pidAlive, readLog, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * WORKER_AGENT_TIMEOUT_SECONDS: an agent that outlives it fails the job with a last_error naming the
 * timeout, and its whole process group goes with it (a grandchild it started included).
 */

// Starts `sleep 30` in its own process group (not detached) and records both pids, then hangs.
const AGENT = `
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const grandchild = spawn('sleep', ['30'], { stdio: 'ignore' });
writeFileSync(records + '/' + context.jobId + '.agent.json', JSON.stringify({ pid: process.pid, grandchild: grandchild.pid }));
console.log('thinking very hard');
setInterval(() => undefined, 1000);
`;

/** Live (not zombie) processes whose process group is `pgid`, from /proc. */
function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[0] is the state, fields[2] the process group.
      if (Number(fields[2]) === pgid && fields[0] !== 'Z') members.push(Number(name));
    } catch {
      // Exited while we looked.
    }
  }
  return members;
}

let fixture: Fixture;
let queue: QueueClient | undefined;
let worker: Spawned | undefined;
const strays: number[] = [];

after(async () => {
  await stopEverything(worker, strays);
  await queue?.close();
  await stopTestServer();
});

test('an agent past WORKER_AGENT_TIMEOUT_SECONDS fails the job naming the timeout; its process group is gone', async (t) => {
  fixture = await createFixture({ experimentId: 'agent-timeout', env: { WORKER_AGENT_TIMEOUT_SECONDS: '1' } });
  const agent = path.join(fixture.root, 'hanging-agent.mjs');
  writeFileSync(agent, AGENT);
  Object.assign(fixture.env, { WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, fixture.recordsDir]) });
  const q = (queue = await openQueue(fixture));
  worker = await startWorker(fixture, q);

  const jobId = await q.enqueue({});
  const recordFile = path.join(fixture.recordsDir, `${jobId}.agent.json`);
  // Parsed once whole: the file exists a moment before its content is written.
  const record = await waitFor('the agent to start', () => existsSync(recordFile) && (JSON.parse(readFileSync(recordFile, 'utf8')) as { pid: number; grandchild: number }), 30_000, 20, worker);
  strays.push(record.pid, record.grandchild);
  assert.ok(pidAlive(record.grandchild), 'the grandchild is running while the agent is');
  assert.deepEqual(groupMembers(record.pid).sort(), [record.pid, record.grandchild].sort(), 'the agent leads its own group, the grandchild in it');

  const job = await waitFor('the job to finish', async () => {
    const current = await q.job(jobId);
    return current.status === 'succeeded' || current.status === 'failed' ? current : undefined;
  }, 20_000, 50, worker);
  t.diagnostic(`last_error: ${job.lastError}; ran ${job.finishedAt!.getTime() - job.startedAt!.getTime()} ms`);
  assert.equal(job.status, 'failed');
  assert.match(job.lastError ?? '', /^agent command ".*" timed out after 1s$/);
  assert.equal(job.attempts, 1);
  assert.equal(job.resultCommit, null);
  assert.ok(job.finishedAt!.getTime() - job.startedAt!.getTime() < 10_000, 'the timeout cut the job short');

  // The whole group is gone: the agent and its grandchild (SIGTERM, then SIGKILL after a grace).
  await waitFor('the agent and its grandchild to exit', () => !pidAlive(record.pid) && !pidAlive(record.grandchild), 5000);
  await waitFor(`process group ${record.pid} to have no live member`, () => groupMembers(record.pid).length === 0, 5000);

  // What the agent printed before it was stopped is kept with the failed job.
  const { rows } = await q.pool.query('SELECT kind, content FROM job_artifacts WHERE job_id = $1', [jobId]);
  const output = rows.find((row) => row.kind === 'agent_output');
  assert.match(String(output?.content ?? ''), /thinking very hard/);

  // The row is failed first, then pg-boss fails the queue job (no retries by default).
  const queueJob = await waitFor('the queue job to settle', async () => {
    const found = (await q.queueJobs()).find((row) => row.data.jobId === jobId);
    return found && found.state !== 'active' ? found : undefined;
  }, 10_000, 50, worker);
  assert.equal(queueJob.state, 'failed');
  const failed = readLog(logDir(fixture, q.settings, 'worker', 'worker0001')).find((line) => line.jobId === jobId && line.msg === 'job failed');
  assert.match(String(failed?.error), /timed out after 1s/);
  await waitFor('the worktree to be removed', () => !existsSync(path.join(`${fixture.worktree}-worktrees`, jobId)), 5000);

  // The worker carries on: it is idle again and takes the next job.
  await waitFor('the worker to be idle again', async () => {
    const { rows: workers } = await q.pool.query('SELECT state FROM workers WHERE worker_id = $1', ['worker0001']);
    return workers[0]?.state === 'idle';
  }, 10_000, 50, worker);
});
