import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { insertJob, markQueued } from '../../src/shared/db/jobs.ts';
import { withTransaction } from '../../src/shared/db/pool.ts';
import { JobPreconditionError } from '../../src/shared/errors.ts';
import { messageJobId, parseEvolutionJobMessage, type QueueJob } from '../../src/shared/queue-message.ts';
import { QueueStatements } from '../../src/shared/queue-statements.ts';
import { queueJobFate, sendEvolutionJob } from '../../src/shared/queue.ts';
import { EvolutionWorker } from '../../src/worker/evolution-worker.ts';
import { WorkerRepository } from '../../src/worker/repository.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, silentLogger, type Fixture } from '../scheduler/fixture.ts';

/** The queue contract on a real pg-boss: send with priority, parse, and what became of a queue job. */

after(() => stopTestServer());

let fixture: Fixture;
before(async () => {
  fixture = await createFixture();
});
after(() => fixture.close());

async function sendJob(priority: number): Promise<{ jobId: string; queueJobId: string }> {
  return withTransaction(fixture.pool, async (client) => {
    const job = await insertJob(client, { experimentId: fixture.settings.experiment.uuid, baseCommit: fixture.rootCommit, priority });
    const queueJobId = await sendEvolutionJob(fixture.boss, fixture.settings.queue.name, job, client);
    await markQueued(client, job.id, queueJobId);
    return { jobId: job.id, queueJobId };
  });
}

async function fetchOne(): Promise<QueueJob & { state: string }> {
  const [queueJob] = await fixture.boss.fetch(fixture.settings.queue.name, { includeMetadata: true });
  assert.ok(queueJob, 'a queue job was waiting');
  return queueJob;
}

describe('queue contract', () => {
  test('a sent job carries only the row id, with the row priority, and is rolled back with its transaction', async () => {
    const { jobId, queueJobId } = await sendJob(7);
    const [found] = await fixture.boss.findJobs(fixture.settings.queue.name, { id: queueJobId });
    assert.deepEqual(found.data, { jobId });
    assert.equal(found.priority, 7);

    let rolledBack = '';
    await assert.rejects(withTransaction(fixture.pool, async (client) => {
      rolledBack = await sendEvolutionJob(fixture.boss, fixture.settings.queue.name, { id: jobId, priority: 0 }, client);
      throw new Error('roll back');
    }), /roll back/);
    assert.equal((await fixture.boss.findJobs(fixture.settings.queue.name, { id: rolledBack })).length, 0, 'no queue job outside the transaction');
    await fixture.boss.deleteJob(fixture.settings.queue.name, queueJobId);
  });

  test('a message is parsed into a lower-case job id, or rejected as a precondition failure', () => {
    const id = '6F1D2A3B-0000-4000-8000-000000000001';
    assert.deepEqual(parseEvolutionJobMessage({ jobId: ` ${id} ` }), { jobId: id.toLowerCase() });
    for (const bad of [null, 'x', {}, { jobId: 42 }, { jobId: 'not-a-uuid' }]) {
      assert.throws(() => parseEvolutionJobMessage(bad), (error: unknown) => error instanceof JobPreconditionError && /no valid job id/.test(error.message));
    }
    assert.equal(messageJobId({ jobId: 'not-a-uuid' }), 'not-a-uuid', 'as written, for the log');
    assert.equal(messageJobId({ jobId: 42 }), null);
    assert.equal(messageJobId(null), null);
  });

  test('the fate of a queue job: missing, active, completed, failed with its reason, cancelled', async () => {
    const queue = fixture.settings.queue.name;
    const boss = fixture.boss;
    const none = await queueJobFate(boss, queue, null);
    assert.equal(none.state, 'missing');
    assert.match(none.state === 'missing' ? none.reason : '', /queue job \(none\) vanished/);
    assert.equal((await queueJobFate(boss, queue, '00000000-0000-4000-8000-000000000000')).state, 'missing');

    const waiting = await sendJob(0);
    assert.deepEqual(await queueJobFate(boss, queue, waiting.queueJobId), { state: 'active' });
    const running = await fetchOne();
    assert.deepEqual(await queueJobFate(boss, queue, running.id), { state: 'active' }, 'a running queue job is active');
    await boss.complete(queue, running.id, { commit: 'abc' });
    assert.equal((await queueJobFate(boss, queue, running.id)).state, 'completed');

    const failing = await sendJob(0);
    const fetched = await fetchOne();
    assert.equal(fetched.id, failing.queueJobId);
    await boss.fail(queue, fetched.id, { message: 'evaluator crashed' });
    const failed = await queueJobFate(boss, queue, fetched.id);
    assert.equal(failed.state, 'failed');
    if (failed.state === 'failed') {
      assert.equal(failed.attempts, 1);
      assert.match(failed.reason, /^the queue gave up on it \(failed or expired after 1 attempt\(s\)\): evaluator crashed$/);
    }

    const cancelling = await sendJob(0);
    await boss.cancel(queue, cancelling.queueJobId);
    assert.deepEqual(await queueJobFate(boss, queue, cancelling.queueJobId), { state: 'cancelled', reason: 'its queue job was cancelled' });
  });

  test('a handed-back job keeps its priority on the fresh queue job', async () => {
    const { jobId } = await sendJob(9);
    const queueJob = await fetchOne();
    assert.equal(queueJob.priority, 9);
    const worker = new EvolutionWorker({
      settings: fixture.settings,
      pool: fixture.pool,
      queue: await QueueStatements.load(fixture.pool, fixture.settings),
      logger: silentLogger,
      repository: new WorkerRepository({ settings: { remoteUrl: fixture.remote, baseClone: fixture.settings.worker.git.baseClone }, pool: fixture.pool, logger: silentLogger, workerId: 'w', host: 'h' }),
      agent: { name: 'unused', mutate: () => Promise.reject(new Error('not run')) },
      workerId: 'w',
      host: 'h',
    });
    await worker.handBack(queueJob, { claimed: false });
    const { rows } = await fixture.pool.query<{ queueJobId: string }>('SELECT queue_job_id AS "queueJobId" FROM evolution_jobs WHERE id = $1', [jobId]);
    assert.notEqual(rows[0].queueJobId, queueJob.id, 'the row points at the fresh queue job');
    const [fresh] = await fixture.boss.findJobs(fixture.settings.queue.name, { id: rows[0].queueJobId });
    assert.equal(fresh.priority, 9);
    assert.deepEqual(fresh.data, { jobId });
    assert.equal((await queueJobFate(fixture.boss, fixture.settings.queue.name, queueJob.id)).state, 'completed');
  });
});
