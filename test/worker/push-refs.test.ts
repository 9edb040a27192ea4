import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { commitAll, pushBranch } from '../../src/shared/git.ts';
import { WorkerRepository } from '../../src/worker/repository.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

/**
 * A job's push leaves nothing in the shared base clone. A push to `origin` wrote a remote-tracking
 * ref per job there, never deleted, and every later push read them all before connecting: pushes
 * grew 15–45 ms slower over 2,000 jobs. Workers push to the remote's URL; a worker's start-up
 * sweep deletes the tracking refs older workers left.
 */

const AUTHOR = { name: 'Loreley', email: 'loreley@localhost' };
const TRACKING = 'refs/remotes/origin/evolution/job/';

async function oneJob(repository: WorkerRepository, jobId: string, commit: string, remote: string): Promise<string> {
  const branch = `evolution/job/t/${jobId}`;
  const worktree = await repository.createWorktree(jobId, branch, commit);
  appendFileSync(path.join(worktree.directory, 'prog.txt'), `y = ${jobId}\n`);
  const created = await commitAll(worktree.directory, `job ${jobId}`, AUTHOR);
  await pushBranch(worktree.directory, remote, branch, created!.hash);
  await repository.removeWorktree(worktree);
  return created!.hash;
}

test('a job pushed to the remote URL leaves no ref in the base clone', async () => {
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n' });
  const baseClone = path.join(tempDir(), 'clone');
  const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger: pino({ level: 'silent' }), workerId: 'w1', host: os.hostname() });
  const jobId = '11111111-1111-4111-8111-111111111111';
  const pushed = await oneJob(repository, jobId, commit, remote);
  assert.equal(git(remote, 'rev-parse', `refs/heads/evolution/job/t/${jobId}`), pushed, 'the branch is on the remote');
  assert.equal(git(baseClone, 'for-each-ref', TRACKING), '', 'no remote-tracking ref for it');
  assert.equal(git(baseClone, 'for-each-ref', 'refs/heads/evolution/'), '', 'no local job branch');
});

test('the start-up sweep deletes the remote-tracking refs that pushes to origin left', async () => {
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n' });
  const baseClone = path.join(tempDir(), 'clone');
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
  const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger, workerId: 'w1', host: os.hostname() });
  // What older workers did: push to 'origin', which writes refs/remotes/origin/<branch>.
  for (const n of [1, 2, 3]) await oneJob(repository, `2222222${n}-2222-4222-8222-222222222222`, commit, 'origin');
  assert.equal(git(baseClone, 'for-each-ref', TRACKING).split('\n').length, 3);
  await repository.sweepBranches();
  assert.equal(git(baseClone, 'for-each-ref', TRACKING), '', 'deleted');
  assert.ok(git(baseClone, 'rev-parse', 'refs/remotes/origin/main'), 'other tracking refs stay');
  assert.ok(lines.some((line) => line.msg === 'deleted remote-tracking refs of job branches left by older pushes' && line.refs === 3), 'logged');
});
