import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ensureExperiment, recordExperimentRoot } from '../../src/shared/db/experiments.ts';
import { insertJob, type JobStatus } from '../../src/shared/db/jobs.ts';
import { migrate } from '../../src/shared/db/migrations/index.ts';
import { createPool, type Pool } from '../../src/shared/db/pool.ts';
import { upsertMetrics } from '../../src/shared/db/results.ts';
import { upsertWorker } from '../../src/shared/db/workers.ts';
import type { Settings } from '../../src/shared/settings/index.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, type Fixture } from '../helpers/experiment.ts';
import { killAllSpawned, spawnLoreley } from '../helpers/processes.ts';

/**
 * `loreley status` as a user runs it, against a fixture database holding jobs in every status, a
 * baseline job, metrics and two processes' rows; and without any database to read.
 */

let fixture: Fixture;
let settings: Settings;
let pool: Pool;
let runningJobId: string;
const bestCommit = 'b'.repeat(40);
const host = os.hostname();
const workerPid = 424242;
const schedulerPid = 434343;

// Evolution jobs by status; the baseline job below is not one of them.
const COUNTS: Record<JobStatus, number> = { pending: 2, queued: 1, running: 1, succeeded: 3, failed: 1, cancelled: 0 };

before(async () => {
  fixture = await createFixture({ experimentId: 'cli-status' });
  settings = fixtureSettings(fixture);
  pool = createPool({ url: fixture.databaseUrl!, settings: settings.database, applicationName: 'loreley-test' });
  await migrate(pool, settings.database.schema);
  const experimentId = settings.experiment.uuid;
  await ensureExperiment(pool, settings.experiment);
  await recordExperimentRoot(pool, experimentId, fixture.remote, 'main', fixture.baseCommit);

  for (const [status, count] of Object.entries(COUNTS) as Array<[JobStatus, number]>) {
    for (let i = 0; i < count; i += 1) {
      const job = await insertJob(pool, { experimentId, baseCommit: fixture.baseCommit });
      await pool.query('UPDATE evolution_jobs SET status = $2, queue_job_id = $3 WHERE id = $1', [job.id, status, status === 'pending' ? null : randomUUID()]);
      if (status === 'running') runningJobId = job.id;
      if (status === 'succeeded' && i === 0) {
        await upsertMetrics(pool, experimentId, bestCommit, job.id, [{ name: 'combined_score', value: 2.5 }, { name: 'other', value: 99 }]);
      }
      if (status === 'succeeded' && i === 1) {
        await upsertMetrics(pool, experimentId, 'c'.repeat(40), job.id, [{ name: 'combined_score', value: 1.75 }]);
      }
    }
  }
  const baseline = await insertJob(pool, { experimentId, baseCommit: fixture.baseCommit, kind: 'baseline' });
  await pool.query(`UPDATE evolution_jobs SET status = 'succeeded' WHERE id = $1`, [baseline.id]);
  await upsertMetrics(pool, experimentId, fixture.baseCommit, baseline.id, [{ name: 'combined_score', value: 1 }]);

  await upsertWorker(pool, { experimentId, host, workerId: 'worker0001', role: 'worker', pid: workerPid, state: 'busy', currentJobId: runningJobId });
  await upsertWorker(pool, { experimentId, host, workerId: 'scheduler0001', role: 'scheduler', pid: schedulerPid, state: 'idle', currentJobId: null });
  // Another experiment's rows in the same database are not shown.
  const other = fixtureSettings(fixture, { EXPERIMENT_ID: `${settings.experiment.raw}-other` }).experiment;
  await ensureExperiment(pool, other);
  await insertJob(pool, { experimentId: other.uuid, baseCommit: fixture.baseCommit });
  await upsertWorker(pool, { experimentId: other.uuid, host, workerId: 'worker0009', role: 'worker', pid: 1, state: 'idle', currentJobId: null });
  await upsertMetrics(pool, other.uuid, 'd'.repeat(40), null, [{ name: 'combined_score', value: 1000 }]);
});

after(async () => {
  killAllSpawned();
  await pool?.end();
  await stopTestServer();
});

async function status(args: string[], env = fixture.env, cwd = fixture.root) {
  const run = spawnLoreley(['status', ...args], { env, cwd });
  const exit = await run.waitExit(30_000);
  return { code: exit.code, stdout: run.stdout(), stderr: run.stderr() };
}

describe('with DATABASE_URL', () => {
  test('status prints the experiment, jobs by status, the best and baseline fitness, and every process', async () => {
    const { code, stdout, stderr } = await status([]);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
    const lines = stdout.trimEnd().split('\n');
    const line = (prefix: string) => {
      const found = lines.find((l) => l.startsWith(prefix));
      assert.ok(found, `a line starting with ${JSON.stringify(prefix)} in:\n${stdout}`);
      return found;
    };
    assert.equal(line('experiment'), `experiment  ${settings.experiment.raw} (${settings.experiment.namespace})`);
    assert.equal(line('root'), `root        ${fixture.baseCommit}`);
    assert.equal(line('jobs'), 'jobs        8: pending 2, queued 1, running 1, succeeded 3, failed 1, cancelled 0');
    assert.equal(line('fitness'), `fitness     combined_score: best 2.5 at ${bestCommit.slice(0, 12)}, baseline 1`);
    assert.equal(line('models'), 'models      no model calls');

    const processes = lines.slice(lines.indexOf('processes') + 1);
    assert.equal(processes.length, 2, stdout);
    const [scheduler, worker] = processes;
    assert.match(scheduler, new RegExp(`^  ${host}/scheduler0001\\s+scheduler\\s+pid ${schedulerPid}\\s+idle\\s+seen \\d+s ago$`));
    assert.match(worker, new RegExp(`^  ${host}/worker0001\\s+worker\\s+pid ${workerPid}\\s+busy\\s+job ${runningJobId.slice(0, 8)} seen \\d+s ago$`));
  });

  test('status --json prints the same as JSON', async () => {
    const { code, stdout, stderr } = await status(['--json']);
    assert.equal(code, 0, stderr);
    const parsed = JSON.parse(stdout) as {
      experiment: { id: string; slug: string; namespace: string; rootCommit: string; finishedAt: string | null };
      jobs: Record<string, number | null>;
      fitness: { metric: string; baseline: number | null; best: { commitHash: string; value: number; jobId: string } | null };
      workers: Array<{ host: string; workerId: string; role: string; pid: number; state: string; currentJobId: string | null; lastHeartbeat: string }>;
      usage: { calls: number };
    };
    assert.deepEqual(parsed.experiment, {
      id: settings.experiment.uuid,
      slug: settings.experiment.raw,
      namespace: settings.experiment.namespace,
      rootCommit: fixture.baseCommit,
      finishedAt: null,
    });
    assert.deepEqual(parsed.jobs, { ...COUNTS, total: 8, budget: settings.scheduler.maxTotalJobs ?? null });
    assert.equal(parsed.fitness.metric, 'combined_score');
    assert.equal(parsed.fitness.baseline, 1);
    assert.equal(parsed.fitness.best?.commitHash, bestCommit);
    assert.equal(parsed.fitness.best?.value, 2.5);
    assert.equal(parsed.usage.calls, 0);
    assert.deepEqual(
      parsed.workers.map(({ host: h, workerId, role, pid, state, currentJobId }) => ({ host: h, workerId, role, pid, state, currentJobId })),
      [
        { host, workerId: 'scheduler0001', role: 'scheduler', pid: schedulerPid, state: 'idle', currentJobId: null },
        { host, workerId: 'worker0001', role: 'worker', pid: workerPid, state: 'busy', currentJobId: runningJobId },
      ],
    );
    for (const worker of parsed.workers) assert.ok(Math.abs(Date.now() - Date.parse(worker.lastHeartbeat)) < 120_000, 'last heartbeat is a recent timestamp');
  });

  test('an experiment with no data in the database: exit 1, one line, no stack trace', async () => {
    const { code, stdout, stderr } = await status([], { ...fixture.env, EXPERIMENT_ID: 'never-ran-here' });
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    assert.match(stderr, /^loreley status: experiment never-ran-here \(.*\) has no data in this database yet\n$/);
  });
});

describe('without a database', () => {
  test('no DATABASE_URL and no running embedded database: exit 1 with a one-line error, no stack trace', async () => {
    const env: Record<string, string> = { ...fixture.env, LORELEY_DATA_DIR: path.join(fixture.root, 'no-data-here') };
    delete env.DATABASE_URL;
    for (const args of [[], ['--json']]) {
      const { code, stdout, stderr } = await status(args, env);
      assert.equal(code, 1, stderr);
      assert.equal(stdout, '');
      assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
      const lines = stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, stderr);
      assert.match(lines[0], /^loreley status: no DATABASE_URL and no running embedded database/);
    }
  });

  test('a DATABASE_URL nobody listens on: exit 1 with a one-line error, no stack trace', async () => {
    const { code, stderr } = await status([], { ...fixture.env, DATABASE_URL: 'postgres://u:secret-pw@127.0.0.1:1/none' });
    assert.equal(code, 1);
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
    assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    assert.match(stderr, /^loreley status: /);
    assert.ok(!stderr.includes('secret-pw'), 'the password is not echoed');
  });
});
