import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { insertJob } from '../../src/shared/db/jobs.ts';
import { jobBranchName } from '../../src/shared/experiment.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type Fixture, type QueueClient, startWorker, stopEverything } from '../helpers/experiment.ts';
import { git } from '../helpers/git.ts';
import { deadPid, pidAlive, readLog, waitFor, type LogLine, type Spawned } from '../helpers/processes.ts';

/**
 * `loreley worker` as a real process on a real PostgreSQL, against a bare git remote in a temp dir,
 * with an agent and an evaluator whose behaviour each job picks through its payload.
 */

let fixture: Fixture;
let queue: QueueClient;
let worker: Spawned;
let worktreesRoot: string;
const sweep = { abandoned: '', abandonedMeta: '', unmarked: '', otherHost: '', liveOther: '' };

function workerLog(): LogLine[] {
  return readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
}

async function finished(jobId: string, timeoutMs = 60_000) {
  return waitFor(`job ${jobId} to finish`, async () => {
    const job = await queue.job(jobId);
    return job.status === 'succeeded' || job.status === 'failed' ? job : undefined;
  }, timeoutMs, 50, worker);
}

function record(jobId: string, who: 'agent' | 'evaluator'): { pid: number; cwd: string; grandchild?: number } {
  return JSON.parse(readFileSync(path.join(fixture.recordsDir, `${jobId}.${who}.json`), 'utf8'));
}

function marker(directory: string, content: Record<string, unknown>): void {
  mkdirSync(directory, { recursive: true });
  writeFileSync(path.join(directory, '.loreley-worktree'), `${JSON.stringify(content)}\n`);
  writeFileSync(path.join(directory, 'left-over.txt'), 'from a killed worker\n');
}

before(async () => {
  fixture = await createFixture({ experimentId: 'worker', env: { WORKER_EVALUATOR_TIMEOUT_SECONDS: '2' } });
  queue = await openQueue(fixture);
  // What a killed worker leaves behind, for the start-up sweep.
  worktreesRoot = `${fixture.worktree}-worktrees`;
  const dead = await deadPid();
  sweep.abandoned = path.join(worktreesRoot, 'abandoned-job');
  sweep.abandonedMeta = path.join(worktreesRoot, 'abandoned-job.meta');
  sweep.unmarked = path.join(worktreesRoot, 'not-ours');
  sweep.otherHost = path.join(worktreesRoot, 'other-host-job');
  sweep.liveOther = path.join(worktreesRoot, 'live-worker-job');
  marker(sweep.abandoned, { jobId: 'x', workerId: 'worker0009', host: os.hostname(), pid: dead });
  marker(sweep.abandonedMeta, { jobId: 'x', workerId: 'worker0009', host: os.hostname(), pid: dead });
  mkdirSync(sweep.unmarked);
  writeFileSync(path.join(sweep.unmarked, 'keep.txt'), 'not a Loreley worktree\n');
  marker(sweep.otherHost, { jobId: 'y', workerId: 'worker0009', host: `not-${os.hostname()}`, pid: dead });
  // Another worker on this host that is still alive (this test process stands in for it).
  marker(sweep.liveOther, { jobId: 'z', workerId: 'worker0007', host: os.hostname(), pid: process.pid });

  // Idle is reported once the sweep is done and the worker takes jobs.
  worker = await startWorker(fixture, queue);
});

after(async () => {
  await stopEverything(worker);
  await queue?.close();
  await stopTestServer();
});

describe('start-up sweep', () => {
  test('removes marked worktrees of dead workers on this host and leaves everything else alone', () => {
    assert.ok(!existsSync(sweep.abandoned), 'the dead worker\'s worktree is removed');
    assert.ok(!existsSync(sweep.abandonedMeta), 'and its .meta directory');
    assert.ok(existsSync(path.join(sweep.unmarked, 'keep.txt')), 'a directory without the marker is left alone');
    assert.ok(existsSync(sweep.otherHost), 'another host\'s worktree is not ours to judge');
    assert.ok(existsSync(sweep.liveOther), 'a live worker\'s worktree is left alone');
    const line = workerLog().find((l) => l.msg === 'removed worktrees left by a stopped worker');
    assert.ok(line, 'the sweep is logged');
    assert.deepEqual([...(line.swept as string[])].sort(), [sweep.abandoned, sweep.abandonedMeta].sort());
  });
});

describe('a job end to end', () => {
  test('worktree, agent, commit, push, evaluator, stored results, worktree removed', async (t) => {
    const jobId = await queue.enqueue({});
    const job = await finished(jobId);
    assert.equal(job.status, 'succeeded', job.lastError ?? '');
    t.diagnostic(`pickup latency (queued_at → started_at): ${job.startedAt!.getTime() - job.queuedAt!.getTime()} ms; run: ${job.finishedAt!.getTime() - job.startedAt!.getTime()} ms`);
    assert.equal(job.attempts, 1);
    assert.equal(job.workerId, 'worker0001');
    assert.equal(job.lastError, null);
    const commit = job.resultCommit!;
    assert.match(commit, /^[0-9a-f]{40}$/);

    // The agent ran in the job's worktree.
    const expectedWorktree = path.join(worktreesRoot, jobId);
    assert.equal(record(jobId, 'agent').cwd, expectedWorktree);
    assert.equal(record(jobId, 'evaluator').cwd, expectedWorktree);

    // The branch was pushed to the remote and holds the agent's edit on top of the base commit.
    const branch = jobBranchName(queue.settings.experiment, jobId);
    assert.equal(branch, `evolution/job/${queue.settings.experiment.namespace}/${jobId}`);
    assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${branch}`), commit);
    assert.equal(git(fixture.remote, 'rev-parse', `${commit}^`), fixture.baseCommit);
    assert.match(git(fixture.remote, 'show', `${commit}:prog.txt`), new RegExp(`y = "${jobId}"`));
    assert.equal(git(fixture.remote, 'log', '-1', '--format=%s|%an', commit), `agent edit for ${jobId}|Loreley`);
    assert.equal(git(fixture.remote, 'ls-tree', '--name-only', commit).split('\n').includes('.loreley-worktree'), false, 'the marker is never committed');
    assert.equal(git(fixture.worktree, 'for-each-ref', 'refs/remotes/origin/evolution/'), '', 'the push left no remote-tracking ref in the base clone');

    // Evaluator metrics, the commit card and the artifacts are stored.
    const { rows: metrics } = await queue.pool.query(
      'SELECT name, value, unit, higher_is_better, job_id, commit_hash FROM metrics WHERE experiment_id = $1 ORDER BY name',
      [queue.settings.experiment.uuid],
    );
    assert.deepEqual(metrics, [
      { name: 'lines', value: 3, unit: null, higher_is_better: false, job_id: jobId, commit_hash: commit },
      { name: 'score', value: 1.5, unit: 'points', higher_is_better: true, job_id: jobId, commit_hash: commit },
    ]);
    const { rows: cards } = await queue.pool.query('SELECT * FROM commit_cards WHERE commit_hash = $1', [commit]);
    assert.equal(cards.length, 1);
    assert.equal(cards[0].parent_commit, fixture.baseCommit);
    assert.equal(cards[0].job_id, jobId);
    assert.equal(cards[0].branch, branch);
    assert.equal(cards[0].summary, `scored ${jobId}`);
    assert.deepEqual(cards[0].changed_files, ['prog.txt']);
    const { rows: artifacts } = await queue.pool.query('SELECT kind, content FROM job_artifacts WHERE job_id = $1 ORDER BY kind', [jobId]);
    const byKind = Object.fromEntries(artifacts.map((row) => [row.kind, row.content as string]));
    assert.match(byKind.agent_output ?? '', /edited prog\.txt/);
    assert.match(byKind.evaluator_output ?? '', /evaluating/);

    // The queue job is complete, and nothing of the worktree is left.
    const queueJob = (await queue.queueJobs()).find((q) => q.data.jobId === jobId);
    assert.equal(queueJob?.state, 'completed');
    // The row says succeeded before the worker's `finally` has removed the worktree: allow it a moment.
    await waitFor('the worktree to be removed', () => !existsSync(expectedWorktree) && !existsSync(`${expectedWorktree}.meta`), 5000);
    assert.ok(!git(fixture.worktree, 'worktree', 'list').includes(jobId), 'git no longer lists the worktree');

    const lines = workerLog().filter((line) => line.jobId === jobId);
    const started = lines.find((line) => line.msg === 'job started');
    const complete = lines.find((line) => line.msg === 'job complete');
    assert.ok(started, '"job started" logged with the jobId');
    assert.ok(complete, '"job complete" logged with the jobId');
    assert.equal(complete.commit, commit);
    assert.equal(started.level, 'info');
  });

  test('a flat {name: number} evaluator output is accepted', async () => {
    const jobId = await queue.enqueue({ evaluator: 'flat' });
    const job = await finished(jobId);
    assert.equal(job.status, 'succeeded', job.lastError ?? '');
    const { rows } = await queue.pool.query('SELECT name, value FROM metrics WHERE job_id = $1 ORDER BY name', [jobId]);
    assert.deepEqual(rows, [{ name: 'score', value: 2 }, { name: 'size', value: 3 }]);
    const { rows: cards } = await queue.pool.query('SELECT summary FROM commit_cards WHERE job_id = $1', [jobId]);
    assert.equal(cards[0].summary, 'flat');
  });
});

describe('error classes', () => {
  async function queueJobFor(predicate: (data: { jobId?: string }) => boolean) {
    return waitFor('the queue job to be settled', async () => {
      const found = (await queue.queueJobs()).find((q) => predicate(q.data));
      return found && ['completed', 'failed', 'cancelled'].includes(found.state) ? found : undefined;
    }, 30_000, 50, worker);
  }

  test('a message whose jobId is not a UUID is skipped as a precondition failure and not retried', async () => {
    await queue.boss.send(queue.settings.queue.name, { jobId: 'not-a-uuid' });
    const settled = await queueJobFor((data) => data.jobId === 'not-a-uuid');
    assert.equal(settled.state, 'completed', 'skipped, so the queue does not retry it');
    assert.equal(settled.retry_count, 0);
    assert.match(JSON.stringify(settled.output), /skipped/);
    const line = workerLog().find((l) => l.jobId === 'not-a-uuid' && l.msg === 'job skipped: precondition failed');
    assert.ok(line);
    assert.equal(line.level, 'warn');
    assert.match(String(line.reason), /expected a UUID/);
  });

  test('a message for a job that does not exist is skipped', async () => {
    const missing = randomUUID();
    await queue.boss.send(queue.settings.queue.name, { jobId: missing });
    const settled = await queueJobFor((data) => data.jobId === missing);
    assert.equal(settled.state, 'completed');
    assert.ok(workerLog().some((l) => l.jobId === missing && l.msg === 'job skipped: precondition failed' && /does not exist/.test(String(l.reason))));
  });

  test('a job already succeeded is skipped with a warning and left as it was', async () => {
    const job = await insertJob(queue.pool, { experimentId: queue.settings.experiment.uuid, baseCommit: fixture.baseCommit });
    await queue.pool.query(`UPDATE evolution_jobs SET status = 'succeeded', result_commit = $2 WHERE id = $1`, [job.id, fixture.baseCommit]);
    const before = await queue.job(job.id);
    await queue.boss.send(queue.settings.queue.name, { jobId: job.id });
    const settled = await queueJobFor((data) => data.jobId === job.id);
    assert.equal(settled.state, 'completed');
    assert.equal(settled.retry_count, 0);
    const line = workerLog().find((l) => l.jobId === job.id && l.msg === 'job skipped: precondition failed');
    assert.equal(line?.level, 'warn');
    assert.match(String(line?.reason), /is succeeded, not pending or queued/);
    assert.deepEqual(await queue.job(job.id), before, 'the row is untouched');
  });

  test('a job whose row another transaction holds is skipped as a lock conflict, row untouched', async () => {
    const job = await insertJob(queue.pool, { experimentId: queue.settings.experiment.uuid, baseCommit: fixture.baseCommit });
    const client = await queue.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT id FROM evolution_jobs WHERE id = $1 FOR UPDATE', [job.id]);
      await queue.boss.send(queue.settings.queue.name, { jobId: job.id });
      const settled = await queueJobFor((data) => data.jobId === job.id);
      assert.equal(settled.state, 'completed', 'a lock conflict is not retried by the queue');
      const line = workerLog().find((l) => l.jobId === job.id && l.msg === 'job skipped: lock conflict');
      assert.ok(line, 'the conflict is logged');
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    const after = await queue.job(job.id);
    assert.deepEqual(after, await queue.job(job.id));
    assert.equal(after.status, 'pending');
    assert.equal(after.attempts, 0);
    assert.equal(after.workerId, null);
    assert.equal(after.startedAt, null);
  });

  const failures: Array<{ name: string; payload: Record<string, unknown>; error: RegExp; artifact: string; grandchild?: boolean }> = [
    { name: 'the agent makes no change', payload: { agent: 'noop' }, error: /the command agent made no change to the code/, artifact: 'agent_output' },
    { name: 'the evaluator prints invalid JSON', payload: { evaluator: 'invalid-json' }, error: /^evaluator ".*" output is invalid: output is not a JSON object/, artifact: 'evaluator_output' },
    { name: 'a metric value is null', payload: { evaluator: 'null-value' }, error: /output is invalid: metric "score" is not a finite number \(got null\)/, artifact: 'evaluator_output' },
    { name: 'a metric value is not a number', payload: { evaluator: 'string-value' }, error: /output is invalid: metric "score" is not a finite number \(got "abc"\)/, artifact: 'evaluator_output' },
    { name: 'more than 64 metrics', payload: { evaluator: 'too-many' }, error: /output is invalid: 65 metrics is more than the limit of 64/, artifact: 'evaluator_output' },
    { name: 'the evaluator exits non-zero', payload: { evaluator: 'exit' }, error: /exited with code 3: evaluator broke on purpose/, artifact: 'evaluator_output', grandchild: true },
    { name: 'the evaluator times out', payload: { evaluator: 'timeout' }, error: /^evaluator ".*" timed out after 2s$/, artifact: 'evaluator_output', grandchild: true },
  ];
  for (const failure of failures) {
    test(`${failure.name}: the job fails with a clear last_error and no process is left`, async (t) => {
      const jobId = await queue.enqueue(failure.payload);
      const job = await finished(jobId);
      assert.equal(job.status, 'failed');
      assert.match(job.lastError ?? '', failure.error);
      t.diagnostic(`last_error: ${job.lastError}`);
      assert.equal(job.attempts, 1);
      assert.ok(job.finishedAt);
      assert.equal(job.resultCommit, null);
      const { rows } = await queue.pool.query('SELECT kind FROM job_artifacts WHERE job_id = $1', [jobId]);
      assert.ok(rows.some((row) => row.kind === failure.artifact), `${failure.artifact} kept with the failed job`);
      const queueJob = await queueJobFor((data) => data.jobId === jobId);
      assert.equal(queueJob.state, 'failed', 'no retries by default (TASKS_WORKER_MAX_RETRIES=0)');
      const line = workerLog().find((l) => l.jobId === jobId && l.msg === 'job failed');
      assert.equal(line?.level, 'error');
      await waitFor('the worktree to be removed', () => !existsSync(path.join(worktreesRoot, jobId)) && !existsSync(path.join(worktreesRoot, `${jobId}.meta`)), 5000);
      if (failure.payload.evaluator) {
        const evaluator = record(jobId, 'evaluator');
        assert.ok(!pidAlive(evaluator.pid), 'the evaluator is gone');
        if (failure.grandchild) {
          assert.ok(evaluator.grandchild, 'the evaluator started a grandchild');
          assert.ok(!pidAlive(evaluator.grandchild!), `the evaluator's grandchild (pid ${evaluator.grandchild}) is gone`);
        }
      }
    });
  }
});

describe('throughput', () => {
  test(
    'a backlog is worked through without idle gaps between jobs',
    async (t) => {
      const ids = [await queue.enqueue({}), await queue.enqueue({}), await queue.enqueue({})];
      const jobs = [];
      for (const id of ids) jobs.push(await finished(id, 60_000));
      const ordered = jobs.sort((a, b) => a.startedAt!.getTime() - b.startedAt!.getTime());
      const gaps = ordered.slice(1).map((job, index) => job.startedAt!.getTime() - ordered[index].finishedAt!.getTime());
      t.diagnostic(`gaps between one job's end and the next one's start: ${gaps.join(', ')} ms`);
      // Without the worker waking itself after a job, pg-boss would sleep out its polling interval
      // (`notifyPollingIntervalSeconds`, at least 10 s in worker-process.ts) before fetching the
      // next one: a gap shorter than that says the backlog was fetched at once, however slow the machine.
      const pollWaitMs = Math.max(queue.settings.queue.pollingIntervalSeconds, 10) * 1000;
      for (const gap of gaps) assert.ok(gap < pollWaitMs, `gap of ${gap} ms`);
    },
  );
});

describe('shutdown', () => {
  test('an unsupervised worker drains on SIGTERM and exits 0', async () => {
    process.kill(worker.pid, 'SIGTERM');
    const exit = await worker.waitExit(30_000);
    assert.equal(exit.code, 0, worker.stderr().slice(-2000));
    const lines = workerLog();
    assert.ok(lines.some((line) => line.msg === 'worker drained'));
    assert.equal(lines.at(-1)?.msg, 'stopped');
    const { rows } = await queue.pool.query('SELECT state FROM workers WHERE worker_id = $1', ['worker0001']);
    assert.equal(rows[0].state, 'stopped');
  });
});
