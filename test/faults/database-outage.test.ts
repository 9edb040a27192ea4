import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { freePort, startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/shared/embedded-database.ts';
import { createFixture, fixtureSettings, logDir } from '../helpers/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { killAllSpawned, readLog, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture, useStallingCommands } from './helpers.ts';
import { openQueue } from '../helpers/experiment.ts';

/**
 * Item 2 of issue 7, done for real: the database under a running experiment (supervisor, two
 * workers, the scheduler) is stopped and started again three times for a few seconds, then once
 * for 60 s. Nothing may exit or count a crash; every job ends exactly once; results computed while
 * the database was away are recorded when it is back; the audit balances at the end.
 */

const running: Spawned[] = [];
let server: EmbeddedDatabase | undefined;
// Every server instance started, stopped at the end (stop is idempotent); the temp dirs go with the process.
const started: EmbeddedDatabase[] = [];
const startServer = async (directory: string, port: number) => {
  const database = await startEmbeddedDatabase({ directory, port });
  started.push(database);
  return database;
};
after(async () => {
  for (const spawned of running) spawned.killGroup('SIGKILL');
  killAllSpawned();
  for (const database of started) await database.stop().catch(() => undefined);
});

const SHORT_OUTAGES = 3;
const SHORT_OUTAGE_MS = 6000;
const LONG_OUTAGE_MS = Number(process.env.LORELEY_FAULT_LONG_OUTAGE_MS ?? 60_000);
const progress = (message: string) => console.log(`[outage ${new Date().toISOString().slice(11, 23)}] ${message}`);
const JOBS = 24;

test('three short database outages and one of 60 s under a running experiment: nothing exits, nothing is lost or recorded twice', async (t) => {
  const directory = tempDir('loreley-outage-pg-');
  const port = await freePort();
  server = await startServer(directory, port);
  const url = server.url;
  const fixture = await createFixture({
    experimentId: 'outage',
    database: false,
    env: { DATABASE_URL: url, SCHEDULER_POLL_INTERVAL_SECONDS: '0.3', SCHEDULER_LOCK_POLL_SECONDS: '0.5', TASKS_WORKER_HEARTBEAT_SECONDS: '10', SUPERVISOR_HEARTBEAT_TIMEOUT_MS: '30000' },
  });
  Object.assign(fixture, { databaseUrl: url });
  useStallingCommands(fixture);
  // Each evaluation takes a while, so outages find jobs in every stage.
  writeFileSync(path.join(fixture.recordsDir, 'evaluator-ms'), '700');
  const settings = fixtureSettings(fixture);
  const supervisor = spawnSupervisor(['--workers', '2', '--exit-when-done', '--max-jobs', String(JOBS)], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);
  const supervisorLog = () => readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));
  const succeeded = async () => {
    const client = await openQueue(fixture, url);
    try {
      return (await client.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM evolution_jobs WHERE status = 'succeeded' AND kind = 'evolution'")).rows[0].n;
    } finally {
      await client.close();
    }
  };

  await waitFor('the first jobs to succeed', async () => (await succeeded()) >= 2, 120_000, 200, supervisor);
  const outage = async (ms: number) => {
    const before = await succeeded();
    await server!.stop();
    progress(`database stopped for ${ms / 1000} s (${before} jobs succeeded so far)`);
    await new Promise((resolve) => setTimeout(resolve, ms));
    assert.equal(supervisor.child.exitCode, null, 'the supervisor rides the outage out');
    server = await startServer(directory, port);
    const back = performance.now();
    progress('database started again');
    await waitFor('progress after the outage', async () => (await succeeded()) > before, 120_000, 500, supervisor);
    progress(`first job succeeded ${Math.round(performance.now() - back)} ms after the database was back`);
  };
  for (let i = 0; i < SHORT_OUTAGES; i += 1) await outage(SHORT_OUTAGE_MS);
  await outage(LONG_OUTAGE_MS);

  const exit = await supervisor.waitExit(300_000);
  assert.equal(exit.code, 0, supervisor.stderr().slice(-3000));
  const log = supervisorLog();
  const crashes = log.filter((line) => /exited unexpectedly|marked errored|was unresponsive/.test(String(line.msg)));
  assert.deepEqual(crashes.map((line) => line.msg), [], 'no child exited or was counted as a crash during the outages');
  // The host's one LISTEN (which wakes the workers) went with the server and came back with it.
  assert.ok(log.some((line) => line.msg === 'lost the LISTEN connection: workers poll until it is back'), 'the supervisor saw its LISTEN connection go');
  assert.ok(log.some((line) => line.msg === 'listening for sent jobs again'), 'and LISTENs again');

  const queue = await openQueue(fixture, url);
  await queue.close();
  const report = await auditFixture(fixture, queue, { databaseUrl: url, expectIngestion: true, root: fixture.root });
  t.diagnostic(`audit counts: ${JSON.stringify(report.counts)}`);
  const spooled = readLog(fixture.logsDir).filter((line) => line.msg === 'result recorded from the spool').length;
  t.diagnostic(`results recorded from the spool after an outage: ${spooled}`);
  assertAudit(report);
  assert.equal(report.counts.succeeded + report.counts.failed, report.counts.jobs, 'every job ended');
  await server.stop();
  server = undefined;
});

test('a supervisor started while its database is down waits for it, then runs: no exit, no crash', async (t) => {
  const directory = tempDir('loreley-outage-pg-');
  const port = await freePort();
  const database = await startServer(directory, port);
  const url = database.url;
  await database.stop();
  const fixture = await createFixture({ experimentId: 'outage-start', database: false, env: { DATABASE_URL: url } });
  Object.assign(fixture, { databaseUrl: url });
  const settings = fixtureSettings(fixture);
  const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
  running.push(supervisor);
  const supervisorLog = () => readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));
  await waitFor('the supervisor to wait for the database', () => supervisorLog().some((line) => line.msg === 'the database is unavailable: waiting for it'), 30_000, 50, supervisor);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.equal(supervisor.child.exitCode, null, 'still waiting, not exited');
  server = await startServer(directory, port);
  const back = performance.now();
  const queue = await openQueue(fixture, url);
  try {
    const jobId = await queue.enqueue({});
    await waitFor('the job to succeed', async () => (await queue.job(jobId)).status === 'succeeded', 60_000, 100, supervisor);
    t.diagnostic(`database up → first job done in ${Math.round(performance.now() - back)} ms`);
  } finally {
    await queue.close();
  }
  process.kill(supervisor.pid, 'SIGTERM');
  assert.equal((await supervisor.waitExit(60_000)).code, 0);
  assert.ok(!supervisorLog().some((line) => /exited unexpectedly|marked errored/.test(String(line.msg))));
});
