import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { claimJob, getJob, insertJob, markFinished, type EvolutionJob } from '../../src/shared/db/jobs.ts';
import { migrate } from '../../src/shared/db/migrations/index.ts';
import { createPool, pgErrorCode, PG_LOCK_NOT_AVAILABLE, withTransaction, type Pool } from '../../src/shared/db/pool.ts';
import { getArtifacts, getCommitCard, getMetrics, recordSucceededAttempt } from '../../src/shared/db/results.ts';
import { listWorkers, upsertWorker, type WorkerPresence } from '../../src/shared/db/workers.ts';
import type { DatabaseSettings } from '../../src/shared/settings/index.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';

/**
 * The worker's claim and result statements against a real PostgreSQL: each is one statement now
 * (one round trip), so what the separate statements enforced one by one is checked here: the
 * preconditions, NOWAIT, the presence the claim records, and that a result whose attempt no
 * longer holds the job writes nothing.
 */

const DATABASE: DatabaseSettings = { url: undefined, schema: 'loreley', bossSchema: 'pgboss', poolMax: 3 };
const EXPERIMENT = '11111111-1111-4111-8111-111111111111';
const OTHER_EXPERIMENT = '22222222-2222-4222-8222-222222222222';

let pool: Pool;
before(async () => {
  pool = createPool({ url: await createTestDatabase(), settings: DATABASE, applicationName: 'loreley-test' });
  await migrate(pool, DATABASE.schema);
});
after(async () => {
  await pool.end();
  await stopTestServer();
});

const presence = (overrides: Partial<WorkerPresence> = {}): WorkerPresence => ({
  experimentId: EXPERIMENT, host: 'host-a', workerId: 'worker0001', role: 'worker', pid: 4242, state: 'busy', currentJobId: null, ...overrides,
});

async function newJob(experimentId = EXPERIMENT): Promise<EvolutionJob> {
  return insertJob(pool, { experimentId, baseCommit: 'a'.repeat(40), kind: 'evolution' });
}

const claim = (jobId: string, queueJobId = randomUUID(), withPresence?: WorkerPresence) =>
  claimJob(pool, jobId, { experimentId: EXPERIMENT, workerId: 'worker0001', host: 'host-a', queueJobId, presence: withPresence });

describe('claimJob', () => {
  test('a pending job: running on this queue job, one attempt, and the process recorded busy on it', async () => {
    const job = await newJob();
    const queueJobId = randomUUID();
    const result = await claim(job.id, queueJobId, presence({ workerId: 'worker-claim' }));
    assert.ok(result.claimed, 'claimed');
    assert.equal(result.claimed.status, 'running');
    assert.equal(result.claimed.attempts, 1);
    assert.equal(result.claimed.queueJobId, queueJobId);
    assert.equal(result.claimed.workerId, 'worker0001');
    assert.ok(result.claimed.startedAt instanceof Date);
    const row = (await listWorkers(pool, EXPERIMENT)).find((w) => w.workerId === 'worker-claim');
    assert.equal(row?.state, 'busy');
    assert.equal(row?.currentJobId, job.id);
    assert.equal(row?.pid, 4242);
  });

  test('a job that does not exist: nothing found, no presence written', async () => {
    const result = await claim(randomUUID(), randomUUID(), presence({ workerId: 'worker-missing' }));
    assert.deepEqual(result, {});
    assert.equal((await listWorkers(pool, EXPERIMENT)).find((w) => w.workerId === 'worker-missing'), undefined);
  });

  test('a job of another experiment, or one already finished, is found as it is and left unchanged', async () => {
    const foreign = await newJob(OTHER_EXPERIMENT);
    assert.deepEqual(await claim(foreign.id), { found: { experimentId: OTHER_EXPERIMENT, status: 'pending' } });
    assert.equal((await getJob(pool, foreign.id))?.status, 'pending');
    const finished = await newJob();
    await markFinished(pool, finished.id, 'cancelled', 'test');
    assert.deepEqual(await claim(finished.id), { found: { experimentId: EXPERIMENT, status: 'cancelled' } });
    assert.equal((await getJob(pool, finished.id))?.attempts, 0);
  });

  test('running: claimed again only by the same queue job (its retry after the worker died)', async () => {
    const job = await newJob();
    const queueJobId = randomUUID();
    assert.ok((await claim(job.id, queueJobId)).claimed);
    assert.deepEqual(await claim(job.id, randomUUID()), { found: { experimentId: EXPERIMENT, status: 'running' } });
    const retried = await claim(job.id, queueJobId);
    assert.equal(retried.claimed?.attempts, 2);
  });

  test('a row another transaction holds: error 55P03 at once (NOWAIT), nothing changed', async () => {
    const job = await newJob();
    await withTransaction(pool, async (client) => {
      await client.query('SELECT id FROM evolution_jobs WHERE id = $1 FOR UPDATE', [job.id]);
      const started = performance.now();
      const error = await claim(job.id).then(() => undefined, (caught: unknown) => caught);
      assert.equal(pgErrorCode(error), PG_LOCK_NOT_AVAILABLE);
      assert.ok(performance.now() - started < 5000, 'did not wait for the lock');
    });
    assert.equal((await getJob(pool, job.id))?.status, 'pending');
  });
});

describe('recordSucceededAttempt', () => {
  const result = (jobId: string, queueJobId: string, commit: string) => ({
    queueJobId,
    card: { experimentId: EXPERIMENT, commitHash: commit, parentCommit: 'a'.repeat(40), jobId, branch: 'evolution/job/x', author: 'Loreley', message: 'msg', summary: 'sum\u0000mary', changedFiles: ['prog.txt'] },
    metrics: [{ name: 'score', value: 2.5 }, { name: 'time (s)', value: 1, unit: 's', higherIsBetter: false }],
    artifacts: { evaluator_output: '{"score": 2.5}', agent_output: 'done' },
  });

  test('while the attempt holds the job: card, metrics and artifacts with the row succeeded, in one statement', async () => {
    const job = await newJob();
    const queueJobId = randomUUID();
    await claim(job.id, queueJobId);
    const commit = 'b'.repeat(40);
    assert.equal(await recordSucceededAttempt(pool, result(job.id, queueJobId, commit)), true);
    const row = await getJob(pool, job.id);
    assert.equal(row?.status, 'succeeded');
    assert.equal(row?.resultCommit, commit);
    assert.equal(row?.ingestionStatus, 'pending');
    const card = await getCommitCard(pool, EXPERIMENT, commit);
    assert.equal(card?.jobId, job.id);
    assert.equal(card?.summary, 'sum\u2400mary', 'stored as storable text');
    assert.deepEqual(card?.changedFiles, ['prog.txt']);
    assert.deepEqual(await getMetrics(pool, EXPERIMENT, commit), [
      { name: 'score', value: 2.5, unit: null, higherIsBetter: true },
      { name: 'time (s)', value: 1, unit: 's', higherIsBetter: false },
    ]);
    assert.deepEqual(await getArtifacts(pool, job.id), { evaluator_output: '{"score": 2.5}', agent_output: 'done' });
    assert.equal(await recordSucceededAttempt(pool, result(job.id, queueJobId, commit)), false, 'a result is recorded once');
  });

  test('an attempt that no longer holds the job writes nothing', async () => {
    const job = await newJob();
    await claim(job.id, randomUUID());
    const commit = 'c'.repeat(40);
    assert.equal(await recordSucceededAttempt(pool, result(job.id, randomUUID(), commit)), false);
    assert.equal((await getJob(pool, job.id))?.status, 'running');
    assert.equal(await getCommitCard(pool, EXPERIMENT, commit), undefined);
    assert.deepEqual(await getMetrics(pool, EXPERIMENT, commit), []);
    assert.deepEqual(await getArtifacts(pool, job.id), {});
  });
});

test('a presence written late is dated from the change (sinceMs), by the database clock', async () => {
  await upsertWorker(pool, presence({ workerId: 'worker-late', state: 'idle' }), 250);
  const { rows } = await pool.query<{ lagMs: number }>(
    `SELECT extract(epoch FROM (now() - last_heartbeat)) * 1000 AS "lagMs" FROM workers WHERE worker_id = 'worker-late'`,
  );
  assert.ok(rows[0].lagMs >= 250 && rows[0].lagMs < 60_000, `last_heartbeat ${rows[0].lagMs} ms ago`);
});
