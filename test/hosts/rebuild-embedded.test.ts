import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { embeddedDatabaseDirectory, startEmbeddedDatabase } from '../../src/shared/embedded-database.ts';
import { createFixture, fixtureSettings } from '../helpers/experiment.ts';
import { killAllSpawned, LORELEY_BIN, NODE, processesMentioning, spawnLoreley, spawnSupervisor, waitFor } from '../helpers/processes.ts';

/**
 * `loreley rebuild` with the embedded database (no DATABASE_URL): the volume holding it is lost, the
 * rebuild starts a new cluster itself and restores the archive. Then `--force` on a terminal (a
 * pseudo-terminal from script(1)): a wrong answer leaves the data untouched, the experiment's id
 * replaces it.
 */

after(() => killAllSpawned());

interface Snapshot {
  readonly elites: Array<{ island: number; cell_key: string; commit_hash: string; fitness: number }>;
  readonly jobs: number;
  readonly lastIngested: string | null;
}

/**
 * Waits until no process works on the cluster: the last user's server has stopped, and so has its
 * watcher, so each start below begins from a stopped cluster rather than taking one over.
 */
async function quiet(directory: string): Promise<void> {
  const location = path.join(directory, 'cluster-location');
  const cluster = existsSync(location) ? readFileSync(location, 'utf8').trim() : directory;
  await waitFor(`nothing running on ${cluster}`, () => processesMentioning(cluster).length === 0, 30_000, 50);
}

/** What the embedded cluster holds of the experiment, read with the server started for the purpose. */
async function snapshot(directory: string, experimentId: string, remove = false): Promise<Snapshot> {
  await quiet(directory);
  const database = await startEmbeddedDatabase({ directory });
  const pool = new pg.Pool({ connectionString: database.url, max: 1 });
  // An idle client told by a stopping server that its connection ends ("terminating connection due
  // to administrator command") emits 'error' on the pool; unheeded, that fails the test after the
  // fact although every query had its answer (seen under full-suite load).
  pool.on('error', () => undefined);
  try {
    const elites = (await pool.query(
      'SELECT island, cell_key, commit_hash, fitness FROM loreley.archive_elites WHERE experiment_id = $1 ORDER BY island, cell_key',
      [experimentId],
    )).rows;
    const { rows } = await pool.query<{ jobs: number; last: string | null }>(
      'SELECT count(*)::int AS jobs, max(ingested_at)::text AS last FROM loreley.evolution_jobs WHERE experiment_id = $1',
      [experimentId],
    );
    return { elites, jobs: rows[0].jobs, lastIngested: rows[0].last };
  } finally {
    await pool.end();
    // remove(): the volume is lost, cluster and all.
    await (remove ? database.remove() : database.stop());
  }
}

/** `loreley rebuild --force` on a pseudo-terminal, answering the confirmation with `answer`. */
async function forceOnTerminal(env: Record<string, string>, cwd: string, answer: string): Promise<{ code: number | null; output: string }> {
  const child = spawn('script', ['-qefc', `'${NODE}' '${LORELEY_BIN}' rebuild --force`, '/dev/null'], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor('the confirmation prompt', () => output.includes('Type the experiment id'), 60_000, 50);
    child.stdin.write(`${answer}\n`);
    const code = await Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no exit:\n${output}`)), 120_000).unref())]);
    return { code, output };
  } finally {
    child.stdin.end();
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

test('loreley rebuild restores a lost embedded database; --force on a terminal replaces only when confirmed', async () => {
  const fixture = await createFixture({
    experimentId: 'rebuild-embedded',
    database: false,
    env: { SCHEDULER_MAX_TOTAL_JOBS: '6', SCHEDULER_POLL_INTERVAL_SECONDS: '0.2', SCHEDULER_MAX_UNFINISHED_JOBS: '2', MAPELITES_FITNESS_METRIC: 'lines' },
  });
  const settings = fixtureSettings(fixture);
  const experimentId = settings.experiment.uuid;
  const directory = embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace);

  const run = spawnSupervisor(['--workers', '2', '--exit-when-done'], { env: fixture.env, cwd: fixture.root });
  assert.equal((await run.waitExit(180_000)).code, 0, run.stderr().slice(-3000));
  const before = await snapshot(directory, experimentId, true);
  assert.ok(before.elites.length >= 1 && before.jobs >= 6, JSON.stringify(before));

  await quiet(directory);
  const rebuild = spawnLoreley(['rebuild'], { env: fixture.env, cwd: fixture.root });
  assert.equal((await rebuild.waitExit(120_000)).code, 0, rebuild.stderr());
  assert.match(rebuild.stdout(), /^starting the embedded PostgreSQL in /m);
  assert.match(rebuild.stdout(), /^rebuilt .* candidates/m);
  const rebuilt = await snapshot(directory, experimentId);
  assert.deepEqual(rebuilt.elites, before.elites, 'the same elites in the same cells');

  await quiet(directory);
  const refused = await forceOnTerminal(fixture.env, fixture.root, 'not-the-id');
  assert.equal(refused.code, 1, refused.output);
  assert.match(refused.output, /the database already holds experiment/);
  assert.match(refused.output, /not confirmed: nothing changed/);
  assert.deepEqual(await snapshot(directory, experimentId), rebuilt, 'a refusal leaves the data untouched');

  await quiet(directory);
  const confirmed = await forceOnTerminal(fixture.env, fixture.root, settings.experiment.raw);
  assert.equal(confirmed.code, 0, confirmed.output);
  assert.match(confirmed.output, /removed experiment /);
  const replaced = await snapshot(directory, experimentId);
  assert.deepEqual(replaced.elites, before.elites);
  assert.notEqual(replaced.lastIngested, rebuilt.lastIngested, 'replayed again');
});
