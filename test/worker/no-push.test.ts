import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, logDir, openQueue, type QueueClient, stopEverything } from '../helpers/experiment.ts';
import { git } from '../helpers/git.ts';
import { readLog, spawnLoreley, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * WORKER_REPO_PUSH=false: the worker commits and evaluates as usual but never pushes, so the job
 * branch exists only in the host's base clone (WORKER_REPO_WORKTREE), not on the remote.
 */

let queue: QueueClient | undefined;
let worker: Spawned | undefined;

after(async () => {
  await stopEverything(worker);
  await queue?.close();
  await stopTestServer();
});

test('with WORKER_REPO_PUSH=false a job succeeds, nothing reaches the remote, the commit is in the base clone', async () => {
  const fixture = await createFixture({ experimentId: 'no-push', env: { WORKER_REPO_PUSH: 'false' } });
  const q = (queue = await openQueue(fixture));
  assert.equal(q.settings.repository.push, false);
  const remoteRefsBefore = git(fixture.remote, 'for-each-ref', '--format=%(refname) %(objectname)');

  worker = spawnLoreley(['worker'], { env: fixture.env, cwd: fixture.root });
  const jobId = await q.enqueue({});
  const job = await waitFor('the job to finish', async () => {
    const current = await q.job(jobId);
    return current.status === 'succeeded' || current.status === 'failed' ? current : undefined;
  }, 60_000, 50, worker);
  assert.equal(job.status, 'succeeded', job.lastError ?? '');
  const commit = job.resultCommit!;
  assert.match(commit, /^[0-9a-f]{40}$/);

  // The remote is exactly as it was: no job branch, no new object.
  const branch = `evolution/job/${q.settings.experiment.namespace}/${jobId}`;
  assert.equal(git(fixture.remote, 'for-each-ref', '--format=%(refname) %(objectname)'), remoteRefsBefore);
  assert.equal(git(fixture.remote, 'branch', '--list', 'evolution/*'), '', 'no evolution branch on the remote');
  const inRemote = spawnSync('git', ['cat-file', '-e', `${commit}^{commit}`], { cwd: fixture.remote, stdio: 'ignore' });
  assert.notEqual(inRemote.status, 0, 'the result commit is not in the remote');

  // The base clone holds the commit (and the job branch pointing at it), on top of the base commit.
  assert.ok(existsSync(fixture.worktree), 'the base clone lives at WORKER_REPO_WORKTREE');
  assert.equal(git(fixture.worktree, 'cat-file', '-t', commit), 'commit');
  assert.equal(git(fixture.worktree, 'rev-parse', `${commit}^`), fixture.baseCommit);
  assert.match(git(fixture.worktree, 'show', `${commit}:prog.txt`), new RegExp(`y = "${jobId}"`));
  assert.equal(git(fixture.worktree, 'rev-parse', `refs/heads/${branch}`), commit);

  // Everything else about the job is as usual: metrics stored, worktree removed.
  const { rows } = await q.pool.query('SELECT name FROM metrics WHERE job_id = $1 ORDER BY name', [jobId]);
  assert.deepEqual(rows.map((row) => row.name), ['lines', 'score']);
  await waitFor('the worktree to be removed', () => !existsSync(path.join(`${fixture.worktree}-worktrees`, jobId)), 5000);
  const lines = readLog(logDir(fixture, q.settings, 'worker', 'worker0001')).filter((line) => line.jobId === jobId);
  assert.equal(lines.find((line) => line.msg === 'job complete')?.commit, commit);
});
