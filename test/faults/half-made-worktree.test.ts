import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { pino } from 'pino';
import { WorkerRepository } from '../../src/worker/repository.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

/**
 * A worker SIGKILLed inside `git worktree add` leaves a half-written registration in the shared
 * clone (found by the soak: "failed to read .git/worktrees/<id>/commondir"), which broke every
 * later job on the host. The next job clears it and goes on; and a finished job leaves neither
 * its worktree nor its local branch.
 */

test('a half-made worktree registration left by a killed worker does not fail the next job', async () => {
  const { remote, commit, root } = createRemote({ 'prog.txt': 'x = 1\n' });
  const baseClone = path.join(tempDir(), 'clone');
  const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger: pino({ level: 'silent' }), workerId: 'w1', host: os.hostname() });
  const first = await repository.createWorktree('11111111-1111-4111-8111-111111111111', 'evolution/job/t/one', commit);
  await repository.removeWorktree(first);

  // What `git worktree add` leaves when killed between creating commondir and writing it.
  const broken = path.join(baseClone, '.git', 'worktrees', 'killed-mid-add');
  mkdirSync(broken, { recursive: true });
  writeFileSync(path.join(broken, 'HEAD'), `${commit}\n`);
  writeFileSync(path.join(broken, 'gitdir'), path.join(root, 'nowhere', '.git\n'));
  writeFileSync(path.join(broken, 'commondir'), '');

  const second = await repository.createWorktree('22222222-2222-4222-8222-222222222222', 'evolution/job/t/two', commit);
  assert.ok(existsSync(path.join(second.directory, 'prog.txt')));
  assert.ok(!existsSync(broken), 'the half-made registration is gone');
  await repository.removeWorktree(second);
  assert.equal(git(baseClone, 'for-each-ref', 'refs/heads/evolution/job/'), '', 'no local job branch left');
});
