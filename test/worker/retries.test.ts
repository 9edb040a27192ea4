import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type Fixture, type QueueClient, startWorker, stopEverything } from '../helpers/experiment.ts';
import { git } from '../helpers/git.ts';
import { NODE, readLog, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * Queue retries (TASKS_WORKER_MAX_RETRIES=1): a failed attempt puts the row back to `queued`, the
 * queue retries the same queue job, and the worker claims the row again. A job that fails once and
 * then succeeds ends `succeeded`; one that fails every time ends `failed` after exactly two attempts.
 */

// Fails the first time it sees a job in mode 'flaky' (and leaves a marker), every time in mode
// 'always-fail'; records every run with the attempt number the worker gave it.
const EVALUATOR = `
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const mode = context.payload.evaluator ?? 'ok';
appendFileSync(records + '/' + context.jobId + '.runs', JSON.stringify({ attempt: context.attempt, pid: process.pid, head: process.env.LORELEY_BASE_COMMIT }) + '\\n');
const marker = records + '/' + context.jobId + '.marker';
if (mode === 'flaky' && !existsSync(marker)) {
  writeFileSync(marker, String(context.attempt));
  console.error('attempt ' + context.attempt + ': flaky evaluator fails the first time');
  process.exit(4);
}
if (mode === 'always-fail') {
  console.error('attempt ' + context.attempt + ' failed on purpose');
  process.exit(5);
}
console.log(JSON.stringify({ summary: 'passed on attempt ' + context.attempt, score: context.attempt }));
`;

let fixture: Fixture;
let queue: QueueClient;
let worker: Spawned;

function runs(jobId: string): Array<{ attempt: number; pid: number }> {
  const file = path.join(fixture.recordsDir, `${jobId}.runs`);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { attempt: number; pid: number });
}

async function settled(jobId: string) {
  const job = await waitFor(`job ${jobId} to finish`, async () => {
    const current = await queue.job(jobId);
    return current.status === 'succeeded' || current.status === 'failed' ? current : undefined;
  }, 30_000, 50, worker);
  const queueJob = await waitFor('its queue job to settle', async () => {
    const found = (await queue.queueJobs()).filter((q) => q.data.jobId === jobId);
    return found.length === 1 && ['completed', 'failed'].includes(found[0].state) ? found[0] : undefined;
  }, 10_000, 50, worker);
  return { job, queueJob };
}

before(async () => {
  fixture = await createFixture({
    experimentId: 'retries',
    env: { TASKS_WORKER_MAX_RETRIES: '1', TASKS_WORKER_RETRY_DELAY_SECONDS: '0', TASKS_WORKER_RETRY_BACKOFF: 'false' },
  });
  const evaluator = path.join(fixture.root, 'flaky-evaluator.mjs');
  writeFileSync(evaluator, EVALUATOR);
  Object.assign(fixture.env, { WORKER_EVALUATOR_COMMAND: JSON.stringify([NODE, evaluator, fixture.recordsDir]) });
  queue = await openQueue(fixture);
  worker = await startWorker(fixture, queue);
});

after(async () => {
  await stopEverything(worker);
  await queue?.close();
  await stopTestServer();
});

test('the queue is set up with the retry policy from settings', async () => {
  const { rows } = await queue.pool.query(
    `SELECT retry_limit, retry_delay, retry_backoff FROM ${queue.settings.database.bossSchema}.queue WHERE name = $1`,
    [queue.settings.queue.name],
  );
  assert.deepEqual(rows, [{ retry_limit: 1, retry_delay: 0, retry_backoff: false }]);
});

test('a job that fails its first attempt and passes its second ends succeeded, attempts 2, queue job completed', async (t) => {
  const jobId = await queue.enqueue({ evaluator: 'flaky' });
  const { job, queueJob } = await settled(jobId);
  assert.equal(job.status, 'succeeded', `last_error: ${job.lastError}`);
  assert.equal(job.attempts, 2);
  assert.equal(job.lastError, null, 'the first attempt\'s error is cleared by the success');
  assert.ok(job.resultCommit);
  assert.deepEqual(runs(jobId).map((run) => run.attempt), [1, 2], 'the evaluator ran once per attempt');
  assert.equal(readFileSync(path.join(fixture.recordsDir, `${jobId}.marker`), 'utf8'), '1');

  assert.equal(queueJob.state, 'completed');
  assert.equal(queueJob.retry_count, 1, 'the queue retried the same queue job once');
  assert.equal(job.queueJobId, queueJob.id);

  // The result belongs to the second attempt: its metric says so, and the branch holds it.
  const { rows } = await queue.pool.query('SELECT name, value, commit_hash FROM metrics WHERE job_id = $1', [jobId]);
  assert.deepEqual(rows, [{ name: 'score', value: 2, commit_hash: job.resultCommit }]);
  const branch = `evolution/job/${queue.settings.experiment.namespace}/${jobId}`;
  assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${branch}`), job.resultCommit, 'the retry\'s push overwrote the first attempt\'s branch');
  assert.equal(git(fixture.remote, 'rev-parse', `${job.resultCommit}^`), fixture.baseCommit);

  const lines = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001')).filter((line) => line.jobId === jobId);
  assert.deepEqual(lines.filter((line) => line.msg === 'job started').map((line) => line.attempt), [1, 2]);
  assert.equal(lines.filter((line) => line.msg === 'job failed').length, 1);
  assert.equal(lines.filter((line) => line.msg === 'job complete').length, 1);
  t.diagnostic(`two attempts took ${job.finishedAt!.getTime() - job.queuedAt!.getTime()} ms from queued to finished`);
});

test('a job that fails both attempts ends failed after exactly 2 attempts, last_error from the last one', async () => {
  const jobId = await queue.enqueue({ evaluator: 'always-fail' });
  const { job, queueJob } = await settled(jobId);
  assert.equal(job.status, 'failed');
  assert.equal(job.attempts, 2);
  assert.match(job.lastError ?? '', /exited with code 5: attempt 2 failed on purpose/);
  assert.doesNotMatch(job.lastError ?? '', /attempt 1/);
  assert.ok(job.finishedAt);
  assert.equal(job.resultCommit, null);

  assert.equal(queueJob.state, 'failed', 'the retry limit is spent');
  assert.equal(queueJob.retry_count, 1);

  // No third attempt comes later: a job sent after it runs to its end on the same worker, and the
  // queue serves an older job first (a retry keeps its place and has no delay here), so a third
  // attempt would have run before it.
  const sentinel = await queue.enqueue({});
  assert.equal((await settled(sentinel)).job.status, 'succeeded');
  assert.deepEqual(runs(jobId).map((run) => run.attempt), [1, 2]);
  const after = await queue.job(jobId);
  assert.equal(after.status, 'failed');
  assert.equal(after.attempts, 2);
  const { rows } = await queue.pool.query(`SELECT count(*)::int AS n FROM ${queue.settings.database.bossSchema}.job WHERE name = $1 AND data->>'jobId' = $2`, [queue.settings.queue.name, jobId]);
  assert.equal(rows[0].n, 1, 'no fresh queue job was sent for it');
  const lines = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001')).filter((line) => line.jobId === jobId);
  assert.equal(lines.filter((line) => line.msg === 'job started').length, 2);
  assert.equal(lines.filter((line) => line.msg === 'job failed').length, 2);
});
