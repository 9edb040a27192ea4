import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { commitAll } from '../../src/shared/git.ts';
import { WorkerRepository } from '../../src/worker/repository.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

/**
 * A job's detached worktree is registered by hand and checked out by one `git read-tree` (one git
 * process instead of the three of `git worktree add`): git must see exactly what `worktree add`
 * would have made.
 */

test('a detached job worktree is one git knows: listed, clean, committable, kept by prune and gc, gone once removed', async () => {
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n', 'bin/run.sh': '#!/bin/sh\necho hi\n' });
  const baseClone = path.join(tempDir(), 'clone');
  const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger: pino({ level: 'silent' }), workerId: 'w1', host: os.hostname() });
  const jobId = '33333333-3333-4333-8333-333333333333';
  const worktree = await repository.createWorktree(jobId, `evolution/job/t/${jobId}`, commit);

  const listed = git(baseClone, 'worktree', 'list', '--porcelain');
  assert.match(listed, new RegExp(`worktree ${worktree.directory}\\nHEAD ${commit}\\ndetached`), listed);
  assert.ok(!listed.includes('locked'), 'not left locked (git locks it only while it is written)');
  assert.equal(git(worktree.directory, 'rev-parse', 'HEAD'), commit);
  assert.equal(git(worktree.directory, 'status', '--porcelain', '--untracked-files=no'), '', 'checked out: files and index match the commit');
  assert.equal(git(worktree.directory, 'rev-parse', '--symbolic-full-name', 'HEAD'), 'HEAD', 'detached');

  // Git's own housekeeping in the shared clone keeps it, and the commit made in it.
  git(baseClone, 'worktree', 'prune');
  writeFileSync(path.join(worktree.directory, 'prog.txt'), 'x = 2\n');
  const created = await commitAll(worktree.directory, 'a job', { name: 'Loreley', email: 'loreley@localhost' });
  git(baseClone, 'gc', '--quiet', '--prune=now');
  assert.equal(git(baseClone, 'cat-file', '-t', created!.hash), 'commit', 'gc keeps what the worktree HEAD names');
  assert.equal(git(baseClone, 'worktree', 'list').split('\n').length, 2);

  await repository.removeWorktree(worktree);
  assert.equal(git(baseClone, 'worktree', 'list').split('\n').length, 1, 'unregistered');
  assert.ok(!existsSync(worktree.directory));
});

test('a parent the clone lacks is fetched, and nothing half-made stays from the first try', async () => {
  const { remote, commit, root } = createRemote({ 'prog.txt': 'x = 1\n' });
  const baseClone = path.join(tempDir(), 'clone');
  const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger: pino({ level: 'silent' }), workerId: 'w1', host: os.hostname() });
  const first = await repository.createWorktree('44444444-4444-4444-8444-444444444444', 'evolution/job/t/a', commit);
  await repository.removeWorktree(first);
  // A commit pushed to the remote after the clone was made.
  const seed = path.join(root, 'seed');
  writeFileSync(path.join(seed, 'prog.txt'), 'x = 3\n');
  git(seed, 'commit', '--quiet', '-am', 'later');
  git(seed, 'push', '--quiet', remote, 'HEAD:refs/heads/later');
  const later = git(seed, 'rev-parse', 'HEAD');
  const second = await repository.createWorktree('55555555-5555-4555-8555-555555555555', 'evolution/job/t/b', later);
  assert.equal(git(second.directory, 'rev-parse', 'HEAD'), later);
  assert.equal(git(baseClone, 'worktree', 'list').split('\n').length, 2, 'one registration: the failed first try left none');
  await repository.removeWorktree(second);
});
