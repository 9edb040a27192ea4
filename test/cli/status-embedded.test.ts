import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { initExample } from '../../src/cli/init-example.ts';
import { ensureExperiment, recordExperimentRoot } from '../../src/shared/db/experiments.ts';
import { insertJob } from '../../src/shared/db/jobs.ts';
import { migrate } from '../../src/shared/db/migrations/index.ts';
import { createPool } from '../../src/shared/db/pool.ts';
import { upsertMetrics } from '../../src/shared/db/results.ts';
import { embeddedDatabaseDirectory, startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/shared/embedded-database.ts';
import { resolveExperiment } from '../../src/shared/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, killAllSpawned, pidAlive, ROOT, spawnLoreley, spawnNode, spawnSupervisor, waitFor } from '../helpers/processes.ts';

/**
 * `loreley status` after the run, on the embedded database: no supervisor is running, so the
 * command starts the experiment's cluster, reads, and stops it again. It runs from a directory with
 * no `.env` and no agent or evaluator settings. And the one-owner rule under a race: a supervisor
 * that starts while a status holds the cluster waits for it instead of being locked out; a status
 * killed while holding it leaves a claim the supervisor takes over.
 */

const experiment = resolveExperiment('status-after-run');
let experimentDir: string;
let dataDir: string;
let directory: string;
let rootCommit: string;
const extraOwners: EmbeddedDatabase[] = [];

/** A finished run's database: written by a supervisor-like owner, then stopped. */
before(async () => {
  experimentDir = tempDir('loreley-status-embedded-');
  dataDir = path.join(experimentDir, '.loreley');
  directory = embeddedDatabaseDirectory(dataDir, experiment.namespace);
  rootCommit = 'a'.repeat(40);
  const database = await startEmbeddedDatabase({ directory });
  const pool = createPool({ url: database.url, settings: { schema: 'loreley', poolMax: 2 } as never, applicationName: 'loreley-test' });
  try {
    await migrate(pool, 'loreley');
    await ensureExperiment(pool, experiment);
    await recordExperimentRoot(pool, experiment.uuid, '/nowhere/remote.git', 'main', rootCommit);
    for (let i = 0; i < 3; i += 1) {
      const job = await insertJob(pool, { experimentId: experiment.uuid, baseCommit: rootCommit });
      await pool.query(`UPDATE evolution_jobs SET status = 'succeeded' WHERE id = $1`, [job.id]);
      await upsertMetrics(pool, experiment.uuid, String(i).repeat(40), job.id, [{ name: 'combined_score', value: 1 + i }]);
    }
  } finally {
    await pool.end();
  }
  await database.stop();
});

after(async () => {
  killAllSpawned();
  for (const owner of extraOwners) await owner.stop().catch(() => undefined);
});

/** Only what identifies the experiment and its database: no WORKER_* settings, no .env. */
function readOnlyEnv(): Record<string, string> {
  return baseEnv({ EXPERIMENT_ID: experiment.raw, LORELEY_DATA_DIR: dataDir, LOG_CONSOLE: 'false' });
}

async function status(args: string[]) {
  const run = spawnLoreley(['status', ...args], { env: readOnlyEnv(), cwd: tempDir('loreley-elsewhere-') });
  const exit = await run.waitExit(60_000);
  return { code: exit.code, stdout: run.stdout(), stderr: run.stderr() };
}

function serverRunning(): boolean {
  const location = path.join(directory, 'cluster-location');
  const cluster = existsSync(location) ? readFileSync(location, 'utf8').trim() : directory;
  return existsSync(path.join(cluster, 'data', 'postmaster.pid'));
}

async function countJobs(url: string): Promise<number> {
  const pool = createPool({ url, settings: { schema: 'loreley', poolMax: 1 } as never, applicationName: 'loreley-test' });
  try {
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM evolution_jobs');
    return rows[0].n;
  } finally {
    await pool.end();
  }
}

test('after the run, with no supervisor and no agent/evaluator settings, status starts the database, reads it and stops it again', async () => {
  assert.equal(serverRunning(), false);
  const text = await status([]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^jobs {8}3: pending 0, queued 0, running 0, succeeded 3, failed 0, cancelled 0$/m);
  assert.match(text.stdout, /^fitness {5}combined_score: best 3 at 222222222222$/m);

  const json = await status(['--json']);
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { database: string; jobs: { succeeded: number }; experiment: { rootCommit: string } };
  assert.equal(report.database, 'embedded-started');
  assert.equal(report.jobs.succeeded, 3);
  assert.equal(report.experiment.rootCommit, rootCommit);

  assert.equal(serverRunning(), false, 'the server started for the command is stopped again');
  assert.equal(existsSync(path.join(directory, 'owner.pid')), false, 'the claim is released');
});

test('while a supervisor runs the embedded database, status reads through it and leaves it running', async () => {
  const owner = await startEmbeddedDatabase({ directory });
  extraOwners.push(owner);
  const json = await status(['--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.equal((JSON.parse(json.stdout) as { database: string }).database, 'embedded-running');
  assert.equal(await countJobs(owner.url), 3, 'the supervisor\'s server still answers');
  await owner.stop();
  extraOwners.pop();
});

/** A read-only command that holds the cluster until told to let go (SIGTERM), in its own process. */
function spawnReader() {
  const script = `
    import { openEmbeddedForReading } from ${JSON.stringify(path.join(ROOT, 'src/shared/embedded-database.ts'))};
    const access = await openEmbeddedForReading({ directory: ${JSON.stringify(directory)} });
    process.on('SIGTERM', async () => { await access.release(); process.exit(0); });
    process.stdout.write('holding ' + access.started + '\\n');
    setInterval(() => undefined, 1000);
  `;
  return spawnNode(['--input-type=module', '-e', script], { env: baseEnv(), cwd: experimentDir });
}

test('a supervisor starting while a status holds the database waits for it, then starts; nothing is lost', async () => {
  const reader = spawnReader();
  await waitFor('the reader to hold the database', () => reader.stdout().includes('holding true'), 60_000, 50, reader);
  assert.equal(serverRunning(), true);

  const messages: string[] = [];
  let started = false;
  const starting = startEmbeddedDatabase({ directory, onLog: (m) => messages.push(m) }).then((database) => {
    started = true;
    return database;
  });
  await waitFor('the supervisor to wait for the reader', () => messages.some((m) => m.includes(`read-only Loreley command (pid ${reader.pid})`)));
  assert.equal(started, false, 'the supervisor does not start a second server on the same cluster');

  reader.killGroup('SIGTERM');
  assert.equal((await reader.waitExit(60_000)).code, 0, reader.stderr());
  const owner = await starting;
  extraOwners.push(owner);
  assert.equal(readFileSync(path.join(directory, 'owner.pid'), 'utf8').trim(), String(process.pid), 'the supervisor holds the claim');
  assert.equal(await countJobs(owner.url), 3);

  // And a status now reads through the supervisor's server instead of starting one.
  const json = await status(['--json']);
  assert.equal((JSON.parse(json.stdout) as { database: string }).database, 'embedded-running');
  await owner.stop();
  extraOwners.pop();
});

test('a status killed while holding the database leaves a stale claim: the next supervisor takes it over and starts', async () => {
  const reader = spawnReader();
  await waitFor('the reader to hold the database', () => reader.stdout().includes('holding true'), 60_000, 50, reader);
  reader.killGroup('SIGKILL');
  await reader.exited;
  await waitFor('the reader to be gone', () => !pidAlive(reader.pid));
  assert.equal(existsSync(path.join(directory, 'owner.pid')), true, 'the killed reader left its claim');
  // Its server may still be up (a session of its own) or already stopped by the owner watcher:
  // either way the next supervisor starts cleanly.

  const owner = await startEmbeddedDatabase({ directory });
  extraOwners.push(owner);
  assert.equal(await countJobs(owner.url), 3);
  await owner.stop();
  extraOwners.pop();
  assert.equal(serverRunning(), false);
});

test('the issue\'s case: a real --exit-when-done run on the embedded database, then status and report from another directory', { timeout: 240_000 }, async () => {
  const directory = tempDir('loreley-embedded-run-');
  initExample({ directory, example: 'circle-packing', maxJobs: 4 });
  const data = path.join(directory, '.loreley');
  const run = spawnSupervisor(['--workers', '2', '--exit-when-done'], { cwd: directory, env: baseEnv({ LOG_CONSOLE: 'false', LORELEY_DATA_DIR: data }) });
  assert.equal((await run.waitExit(180_000)).code, 0, run.stderr().slice(-2000));
  assert.match(run.stdout(), /^Run finished: the budget of 4 jobs is spent\.$/m);

  const elsewhere = tempDir('loreley-elsewhere-');
  const env = baseEnv({ EXPERIMENT_ID: 'circle-packing', LORELEY_DATA_DIR: data, LOGS_BASE_DIR: directory });
  const status = spawnLoreley(['status'], { env, cwd: elsewhere });
  assert.equal((await status.waitExit(60_000)).code, 0, status.stderr());
  // The budget is in the experiment's .env, which this directory does not have.
  assert.match(status.stdout(), /^jobs {8}4: pending 0, queued 0, running 0, succeeded 4, /m);
  assert.match(status.stdout(), /^experiment {2}circle-packing \(circle-packing-a7780c9d\), finished /m);

  const report = spawnLoreley(['report', '--out', path.join(elsewhere, 'r.html')], { env, cwd: elsewhere });
  assert.equal((await report.waitExit(60_000)).code, 0, report.stderr());
  assert.match(readFileSync(path.join(elsewhere, 'r.html'), 'utf8'), /Loreley report: circle-packing/);

  const logs = spawnLoreley(['logs', '--role', 'scheduler', '--json'], { env, cwd: elsewhere });
  assert.equal((await logs.waitExit(60_000)).code, 0, logs.stderr());
  assert.ok(logs.stdout().split('\n').some((line) => line.includes('"msg":"experiment finished"')), 'the scheduler\'s log is read');
  assert.equal(existsSync(path.join(embeddedDatabaseDirectory(data, 'circle-packing-a7780c9d'), 'owner.pid')), false, 'nothing holds the database afterwards');
});
