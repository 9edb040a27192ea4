import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getJob, insertJob, markQueued } from '../../src/shared/db/jobs.ts';
import { withTransaction } from '../../src/shared/db/pool.ts';
import { sendEvolutionJob } from '../../src/shared/queue.ts';
import { assertPinnedPgBoss, PINNED_PG_BOSS, QueueStatements, QueueVersionError, type FetchedJob } from '../../src/shared/queue-statements.ts';
import { EvolutionWorker } from '../../src/worker/evolution-worker.ts';
import { FetchLoop } from '../../src/worker/fetch-loop.ts';
import { HeldClaim } from '../../src/worker/held-claim.ts';
import { WorkerRepository } from '../../src/worker/repository.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture as createExperiment, openQueue } from '../helpers/experiment.ts';
import { killAllSpawned, LORELEY_BIN, spawnNode, waitFor } from '../helpers/processes.ts';
import { createFixture, silentLogger, type Fixture } from '../scheduler/fixture.ts';

/**
 * The worker's own queue loop on pg-boss's own statements (src/shared/queue-statements.ts): the
 * semantics it keeps from pg-boss's worker (attempt fence, retry and backoff, heartbeat, time
 * limit), what is new (a drain between fetch and claim rolls the fetch back), and that a worker
 * process never loads pg-boss's runtime.
 */

after(() => stopTestServer());
after(() => killAllSpawned());

let fixture: Fixture;
let statements: QueueStatements;
before(async () => {
  // One retry, 30 s apart, no backoff: pg-boss's schedule is then exact to check.
  fixture = await createFixture({ env: { TASKS_WORKER_MAX_RETRIES: '1', TASKS_WORKER_RETRY_DELAY_SECONDS: '30', TASKS_WORKER_RETRY_BACKOFF: 'false' } });
  statements = await QueueStatements.load(fixture.pool, fixture.settings);
});
after(() => fixture.close());

const bossSchema = () => fixture.settings.database.bossSchema;

async function sendJob(): Promise<{ jobId: string; queueJobId: string }> {
  return withTransaction(fixture.pool, async (client) => {
    const job = await insertJob(client, { experimentId: fixture.settings.experiment.uuid, baseCommit: fixture.rootCommit });
    const queueJobId = await sendEvolutionJob(fixture.boss, fixture.settings.queue.name, job, client);
    await markQueued(client, job.id, queueJobId);
    return { jobId: job.id, queueJobId };
  });
}

async function queueRow(id: string): Promise<{ state: string; retryCount: number; startedOn: Date | null; dueInSeconds: number; output: unknown }> {
  const { rows } = await fixture.pool.query(
    `SELECT state::text AS state, retry_count AS "retryCount", started_on AS "startedOn", output,
            extract(epoch FROM start_after - now())::float8 AS "dueInSeconds"
       FROM ${bossSchema()}.job WHERE id = $1 AND name = $2`,
    [id, fixture.settings.queue.name],
  );
  return rows[0];
}

/** Fetches with the worker's statement; fails when nothing was ready. */
async function fetchNext(): Promise<FetchedJob> {
  const fetched = await statements.fetch(fixture.pool);
  assert.ok(fetched, 'a queue job was ready');
  return fetched;
}

function worker(): EvolutionWorker {
  return new EvolutionWorker({
    settings: fixture.settings,
    pool: fixture.pool,
    queue: statements,
    logger: silentLogger,
    repository: new WorkerRepository({ settings: { remoteUrl: fixture.remote, baseClone: fixture.settings.worker.git.baseClone }, logger: silentLogger, workerId: 'w', host: 'h' }),
    agent: { name: 'unused', mutate: () => Promise.reject(new Error('not run')) },
    workerId: 'w',
    host: 'h',
  });
}

describe("pg-boss's statements, run by the worker", () => {
  test('a failed attempt is retried as pg-boss schedules it; a stale attempt can neither complete, fail nor heartbeat the newer one', async () => {
    const { queueJobId } = await sendJob();
    const first = await fetchNext();
    assert.equal(first.id, queueJobId);
    assert.equal(first.retryCount, 0);
    assert.equal(first.retryLimit, 1);

    assert.equal(await statements.fail(fixture.pool, first, new Error('evaluator crashed')), true);
    const retrying = await queueRow(queueJobId);
    assert.equal(retrying.state, 'retry');
    assert.ok(retrying.dueInSeconds > 25 && retrying.dueInSeconds <= 30, `retried after the queue's delay (due in ${retrying.dueInSeconds} s)`);
    assert.match(JSON.stringify(retrying.output), /evaluator crashed/, "the error is the attempt's output, as pg-boss stores it");
    assert.equal(await statements.fetch(fixture.pool), undefined, 'not fetched before it is due');

    // Time passes.
    await fixture.pool.query(`UPDATE ${bossSchema()}.job SET start_after = now() WHERE id = $1`, [queueJobId]);
    const second = await fetchNext();
    assert.equal(second.id, queueJobId);
    assert.equal(second.retryCount, 1, 'the retry is a new attempt');

    assert.equal(await statements.complete(fixture.pool, first, { commit: 'stale' }), false, 'the stale attempt does not complete it');
    assert.equal(await statements.fail(fixture.pool, first, new Error('stale')), false, 'nor fail it');
    assert.deepEqual(await statements.touch(fixture.pool, [first]), new Set(), 'nor keep it alive');
    assert.equal((await queueRow(queueJobId)).state, 'active');
    assert.deepEqual(await statements.touch(fixture.pool, [second]), new Set([queueJobId]));

    assert.equal(await statements.fail(fixture.pool, second, new Error('again')), true);
    assert.equal((await queueRow(queueJobId)).state, 'failed', 'retries spent');
    const { rows } = await fixture.pool.query(`SELECT count(*)::int AS n FROM ${bossSchema()}.job WHERE name = $1 AND source_id = $2`, [fixture.settings.queue.deadLetterName, queueJobId]);
    assert.equal(rows[0].n, 1, 'copied to the dead-letter queue');
  });

  test('the attempt holding the job completes it, once', async () => {
    const { queueJobId } = await sendJob();
    const fetched = await fetchNext();
    assert.equal(await statements.complete(fixture.pool, fetched, { commit: 'abc' }), true);
    assert.equal(await statements.complete(fixture.pool, fetched, { commit: 'abc' }), false);
    const row = await queueRow(queueJobId);
    assert.equal(row.state, 'completed');
    assert.deepEqual(row.output, { commit: 'abc' });
  });

  test('a take that finds the worker draining rolls its fetch back: the queue job waits, untouched, no attempt used', async () => {
    const { jobId, queueJobId } = await sendJob();
    const draining = new AbortController();
    draining.abort();
    assert.equal(await worker().take(draining.signal), undefined);
    const row = await queueRow(queueJobId);
    assert.equal(row.state, 'created');
    assert.equal(row.retryCount, 0);
    assert.equal(row.startedOn, null);
    assert.equal((await getJob(fixture.pool, jobId))?.status, 'queued');

    const taken = await worker().take();
    assert.equal(taken?.queueJob.id, queueJobId, 'the next take gets it');
    assert.equal(taken?.job?.status, 'running', 'claimed in the same transaction');
    assert.equal(taken?.job?.queueJobId, queueJobId);
    assert.equal(taken?.moreReady, false, 'nothing else was ready');
    await statements.complete(fixture.pool, taken.queueJob, {});

    // Two sent together (one dispatch): the first take says more are ready, the second does not.
    await sendJob();
    await sendJob();
    assert.equal(await statements.anyReady(fixture.pool), true);
    const first = await worker().take();
    assert.equal(first?.moreReady, true);
    const second = await worker().take();
    assert.equal(second?.moreReady, false);
    assert.equal(await statements.anyReady(fixture.pool), false);
    for (const done of [first!, second!]) await statements.complete(fixture.pool, done.queueJob, {});
  });

  test('a heartbeat that finds the claim gone aborts the job; past the time limit the attempt is failed with pg-boss\'s message', async () => {
    await sendJob();
    const fetched = await fetchNext();
    let reason: Error | undefined;
    const claim = new HeldClaim({ pool: fixture.pool, queue: statements, job: { ...fetched, heartbeatSeconds: 0.2 }, abort: (error) => (reason ??= error), onError: (error) => assert.fail(String(error)) });
    try {
      await waitFor('a heartbeat', async () => {
        const { rows } = await fixture.pool.query(`SELECT heartbeat_on > started_on AS beat FROM ${bossSchema()}.job WHERE id = $1`, [fetched.id]);
        return rows[0].beat;
      });
      assert.equal(reason, undefined, 'held: nothing aborted');
      // The sweep fails the attempt (as pg-boss's heartbeat monitor would).
      await statements.fail(fixture.pool, fetched, new Error('job heartbeat timeout'));
      await waitFor('the job aborted', () => reason);
      assert.match(reason!.message, /is no longer active under this worker's claim/);
    } finally {
      claim.release();
    }

    const { queueJobId } = await sendJob();
    const limited = await fetchNext();
    assert.equal(limited.id, queueJobId);
    let expired: Error | undefined;
    const held = new HeldClaim({ pool: fixture.pool, queue: statements, job: { ...limited, expireInSeconds: 1 }, abort: (error) => (expired ??= error), onError: (error) => assert.fail(String(error)) });
    try {
      await waitFor('the time limit', async () => expired && (await queueRow(queueJobId)).state === 'retry');
      assert.equal(expired!.message, 'handler execution exceeded 1s');
    } finally {
      held.release();
    }
  });

  test('the installed pg-boss must be the pinned version: anything else stops the worker with a one-line reason', () => {
    assert.doesNotThrow(() => assertPinnedPgBoss());
    assert.throws(() => assertPinnedPgBoss('12.39.0'), (error: unknown) => error instanceof QueueVersionError && error.message.includes(`pg-boss 12.39.0 is installed`) && error.message.includes(PINNED_PG_BOSS) && !error.message.includes('\n'));
  });
});

describe('the fetch loop', () => {
  test('a job that brings the next (taken with its result) is followed by that one without a fetch, and a result that found the queue empty by no fetch', async () => {
    const taken: number[] = [];
    const handled: number[] = [];
    let takes = 0;
    const loop = new FetchLoop<number>({
      concurrency: 1,
      pollMs: () => 60_000,
      take: async () => {
        takes += 1;
        if (takes === 1) {
          taken.push(1);
          return 1;
        }
        return undefined;
      },
      handle: async (value) => {
        handled.push(value);
        // The last one looked for the next with its result and found the queue empty.
        return value < 3 ? value + 1 : 'empty';
      },
      onError: (error) => assert.fail(String(error)),
    });
    loop.start();
    await waitFor('the chain handled', () => handled.length === 3);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(takes, 1, 'no fetch after a job whose result found the queue empty');
    loop.wake();
    await waitFor('a fetch on wake', () => takes === 2);
    await loop.stop();
    assert.deepEqual(taken, [1]);
    assert.deepEqual(handled, [1, 2, 3]);
  });

  test('a wake during a fetch that found nothing makes the slot fetch again at once; otherwise it sleeps out the poll', async () => {
    let takes = 0;
    let loop!: FetchLoop<number>;
    const handled: number[] = [];
    loop = new FetchLoop<number>({
      concurrency: 1,
      pollMs: () => 60_000,
      take: async () => {
        takes += 1;
        if (takes === 1) loop.wake(); // a job sent while the first fetch ran
        return takes === 2 ? 42 : undefined;
      },
      handle: async (value) => void handled.push(value),
      onError: (error) => assert.fail(String(error)),
    });
    loop.start();
    // 1: empty but woken meanwhile; 2: a job; 3: right after the job, empty; then asleep.
    await waitFor('three fetches', () => takes >= 3);
    assert.deepEqual(handled, [42]);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(takes, 3, 'asleep until woken or the poll');
    loop.wake();
    await waitFor('a fetch on wake', () => takes === 4);
    await loop.stop();
  });
});

test("a `loreley worker` loads pg-boss's statements, not pg-boss's runtime (no cron-parser, luxon, rrule, OpenTelemetry)", async () => {
  const experiment = await createExperiment({ experimentId: 'queue-loop-modules' });
  const queue = await openQueue(experiment);
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'loreley-modules-'));
  after(async () => {
    await queue.close();
    rmSync(scratch, { recursive: true, force: true });
  });
  // Records every module the process resolves, its own start-up included.
  const hook = path.join(scratch, 'record-modules.mjs');
  const list = path.join(scratch, 'modules.txt');
  writeFileSync(hook, `import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
registerHooks({ resolve(specifier, context, next) { const result = next(specifier, context); appendFileSync(${JSON.stringify(list)}, result.url + '\\n'); return result; } });
`);
  writeFileSync(list, '');
  const spawned = spawnNode(['--import', hook, LORELEY_BIN, 'worker', '--worker-id', 'modules0001'], { env: experiment.env, cwd: experiment.root });
  await waitFor('the worker idle', async () => {
    const { rows } = await queue.pool.query(`SELECT state FROM workers WHERE worker_id = 'modules0001'`);
    return rows[0]?.state === 'idle';
  }, 60_000, 50, spawned);
  const jobId = await queue.enqueue();
  await waitFor('its job done', async () => (await queue.job(jobId)).status === 'succeeded', 60_000, 100, spawned);
  process.kill(spawned.pid, 'SIGTERM');
  assert.equal((await spawned.waitExit(30_000)).code, 0);

  const modules = readFileSync(list, 'utf8').split('\n').filter(Boolean);
  assert.ok(modules.some((url) => url.endsWith('/pg-boss/dist/plans.js')), "pg-boss's statements are loaded");
  const heavy = modules.filter((url) => /\/pg-boss\/dist\/index\.js$|\/pg-boss\/dist\/manager\.js$|cron-parser|luxon|rrule|opentelemetry/.test(url));
  assert.deepEqual(heavy, [], "pg-boss's runtime and the scheduling libraries it brings are not");
});
