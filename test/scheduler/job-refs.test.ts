import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { insertJob } from '../../src/shared/db/jobs.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { keepBranchName } from '../../src/scheduler/job-refs.ts';
import { git, tempDir } from '../helpers/git.ts';
import { completeJob, createFixture, failJob, pushCommit, silentLogger } from './fixture.ts';

/**
 * Finished jobs' branches leave the remote after a tick, and nothing is lost: every job commit
 * stays reachable from the keep branch (a fresh clone has them all, `git gc --prune=now` on the
 * remote keeps them), a running job's branch stays, and a second scheduler builds on the chain.
 */
test('finished jobs\' branches are pruned from the remote; their commits stay reachable from the keep branch', async () => {
  const fixture = await createFixture();
  try {
    const experimentId = fixture.settings.experiment.uuid;
    const namespace = fixture.settings.experiment.namespace;
    const branchOf = (id: string) => `evolution/job/${namespace}/${id}`;
    const remoteBranches = () => git(fixture.remote, 'for-each-ref', '--format=%(refname:short)', 'refs/heads/').split('\n').filter(Boolean).sort();
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' });
    await scheduler.start();

    const make = async (index: number) => {
      const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
      const commit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': `// job ${index}\n` }, branchOf(job.id));
      return { id: job.id, commit };
    };
    const succeeded = await make(1);
    await completeJob(fixture.pool, experimentId, succeeded.id, succeeded.commit, { combined_score: 1, sum_radii: 1, validity: 1 });
    const failed = await make(2);
    await failJob(fixture.pool, failed.id);
    const running = await make(3);

    await scheduler.publishNotes();
    const keep = keepBranchName(namespace);
    assert.deepEqual(remoteBranches(), [branchOf(running.id), keep, 'main'].sort(), 'the finished jobs\' branches are gone, the running one\'s stays');
    const kept = git(fixture.remote, 'rev-list', `refs/heads/${keep}`).split('\n');
    assert.ok(kept.includes(succeeded.commit) && kept.includes(failed.commit), 'both finished jobs\' commits are reachable from the keep branch');
    assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${keep}^{tree}`), git(fixture.remote, 'hash-object', '-t', 'tree', '/dev/null'), 'the keep commits carry an empty tree');

    // The running job finishes; the next tick takes it in on top of the chain.
    await completeJob(fixture.pool, experimentId, running.id, running.commit, { combined_score: 2, sum_radii: 1, validity: 1 });
    const first = git(fixture.remote, 'rev-parse', `refs/heads/${keep}`);
    await scheduler.publishNotes();
    assert.deepEqual(remoteBranches(), [keep, 'main'].sort());
    assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${keep}^1`), first, 'the new link\'s first parent is the previous link');

    // Nothing pruned is lost: gc on the remote keeps every job commit, and a fresh clone (another
    // host's worker) has them all.
    git(fixture.remote, 'gc', '--quiet', '--prune=now');
    const clone = path.join(tempDir('loreley-keep-clone-'), 'clone');
    git(path.dirname(clone), 'clone', '--quiet', '--no-checkout', fixture.remote, clone);
    for (const { commit } of [succeeded, failed, running]) assert.equal(git(clone, 'cat-file', '-t', commit), 'commit');

    // A later scheduler (another host's, with a fresh clone) builds on the chain rather than over it.
    const later = await make(4);
    await completeJob(fixture.pool, experimentId, later.id, later.commit, { combined_score: 3, sum_radii: 1, validity: 1 });
    const second = git(fixture.remote, 'rev-parse', `refs/heads/${keep}`);
    const other = new EvolutionScheduler({
      settings: fixture.settingsWith({ SCHEDULER_REPO_ROOT: path.join(tempDir('loreley-other-scheduler-'), 'clone') }),
      pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0002',
    });
    await other.start();
    await other.publishNotes();
    assert.deepEqual(remoteBranches(), [keep, 'main'].sort());
    assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${keep}^1`), second);
    assert.ok(git(fixture.remote, 'rev-list', `refs/heads/${keep}`).split('\n').includes(later.commit));
  } finally {
    await fixture.close();
  }
});

test('without WORKER_REPO_PUSH nothing is pruned (the job branches are the worker clone\'s, not the remote\'s)', async () => {
  const fixture = await createFixture({ env: { WORKER_REPO_PUSH: 'false' } });
  try {
    const experimentId = fixture.settings.experiment.uuid;
    const scheduler = new EvolutionScheduler({ settings: fixture.settings, pool: fixture.pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler0001' });
    await scheduler.start();
    const job = await insertJob(fixture.pool, { experimentId, baseCommit: fixture.rootCommit });
    const branch = `evolution/job/${fixture.settings.experiment.namespace}/${job.id}`;
    const commit = pushCommit(fixture.remote, fixture.rootCommit, { 'main.js': '// x\n' }, branch);
    await completeJob(fixture.pool, experimentId, job.id, commit, { combined_score: 1, sum_radii: 1, validity: 1 });
    await scheduler.publishNotes();
    assert.equal(git(fixture.remote, 'rev-parse', `refs/heads/${branch}`), commit);
  } finally {
    await fixture.close();
  }
});
