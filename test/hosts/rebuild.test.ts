import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import pg from 'pg';
import { NOTES_REF } from '../../src/shared/notes.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings } from '../helpers/experiment.ts';
import { git } from '../helpers/git.ts';
import { killAllSpawned, spawnLoreley, spawnSupervisor, waitFor } from '../helpers/processes.ts';

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

interface EliteRow {
  island: number;
  cell_key: string;
  commit_hash: string;
  fitness: number;
  descriptor?: number[];
  job_id?: string;
}

async function elites(pool: pg.Pool, experimentId: string): Promise<EliteRow[]> {
  const { rows } = await pool.query<EliteRow>(
    'SELECT island, cell_key, commit_hash, fitness, descriptor, job_id FROM loreley.archive_elites WHERE experiment_id = $1 ORDER BY island, cell_key',
    [experimentId],
  );
  return rows;
}

async function best(pool: pg.Pool, experimentId: string): Promise<EliteRow | undefined> {
  const { rows } = await pool.query<EliteRow>(
    'SELECT island, cell_key, commit_hash, fitness FROM loreley.archive_elites WHERE experiment_id = $1 ORDER BY fitness DESC, placed_at, island, cell_key LIMIT 1',
    [experimentId],
  );
  return rows[0];
}

test('loreley rebuild: the schema dropped mid-run is restored from the remote, the same archive comes out, and the run finishes', async () => {
  const fixture = await createFixture({
    experimentId: 'rebuild',
    env: {
      SCHEDULER_MAX_TOTAL_JOBS: '30',
      SCHEDULER_POLL_INTERVAL_SECONDS: '0.2',
      SCHEDULER_MAX_UNFINISHED_JOBS: '4',
      // Fitness grows along a lineage (the agent appends a line), so elites are replaced.
      MAPELITES_FITNESS_METRIC: 'lines',
      MAPELITES_ISLANDS: '2',
      MAPELITES_MIGRATION_INTERVAL: '4',
      // The default CVT archive (128 cells), its centroids refitted with the projection every 4
      // ingestions once 5 commit vectors are known: the rebuild re-applies the noted models.
      MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS: '2',
      MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES: '5',
      MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL: '4',
    },
  });
  const settings = fixtureSettings(fixture);
  const experimentId = settings.experiment.uuid;
  const pool = new pg.Pool({ connectionString: fixture.databaseUrl, max: 2 });
  try {
    const first = spawnSupervisor(['--workers', '2'], { env: fixture.env, cwd: fixture.root });
    await waitFor('a dozen ingestions', async () => {
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM loreley.evolution_jobs WHERE experiment_id = $1 AND ingestion_status IN ('ingested', 'rejected')`, [experimentId]);
      return rows[0].n >= 12;
    }, 120_000, 200, first);
    process.kill(first.pid, 'SIGTERM');
    assert.equal((await first.waitExit(60_000)).code, 0);

    // The record before the loss: every ingested candidate's note is on the remote.
    const { rows: ingested } = await pool.query(
      `SELECT id, noted_at FROM loreley.evolution_jobs WHERE experiment_id = $1 AND ingestion_status IN ('ingested', 'rejected')`,
      [experimentId],
    );
    assert.ok(ingested.length >= 12);
    assert.ok(ingested.every((row) => row.noted_at !== null), 'every ingestion noted and pushed by the last tick');
    const { rows: refitRows } = await pool.query('SELECT noted_at FROM loreley.archive_refits WHERE experiment_id = $1', [experimentId]);
    assert.ok(refitRows.length >= 1 && refitRows.every((row) => row.noted_at !== null), 'every applied model noted, the one applied while stopping too');
    const before = await elites(pool, experimentId);
    const bestBefore = await best(pool, experimentId);
    assert.ok(before.length >= 2 && bestBefore, `elites: ${JSON.stringify(before)}`);
    const { rows: state } = await pool.query('SELECT rng_state::text AS rng, next_island FROM loreley.archive_state WHERE experiment_id = $1', [experimentId]);
    assert.match(git(fixture.remote, 'rev-parse', NOTES_REF), /^[0-9a-f]{40}$/);

    await pool.query('DROP SCHEMA loreley CASCADE');
    await pool.query('DROP SCHEMA pgboss CASCADE');

    const rebuild = spawnLoreley(['rebuild'], { env: fixture.env, cwd: fixture.root });
    const rebuilt = await rebuild.waitExit(120_000);
    assert.equal(rebuilt.code, 0, rebuild.stderr());
    assert.match(rebuild.stdout(), new RegExp(`replayed ${ingested.length}/${ingested.length} ingestions`));
    const refits = /(\d+) behaviour model\(s\) noted/.exec(rebuild.stdout());
    assert.ok(refits && Number(refits[1]) >= 1, `the run's refits were noted and re-applied:\n${rebuild.stdout()}`);
    assert.doesNotMatch(rebuild.stdout(), /came out differently/, 'every replayed ingestion landed where its note says');
    assert.deepEqual(await elites(pool, experimentId), before, 'the same elites in the same cells, with the same descriptors');
    // The best commit too, ties broken as before (placement order, then island and cell).
    const bestAfterRebuild = await best(pool, experimentId);
    assert.deepEqual(bestAfterRebuild, bestBefore);
    assert.match(rebuild.stdout(), new RegExp(`best lines ${bestBefore.fitness} at ${bestBefore.commit_hash}`));
    const { rows: restoredState } = await pool.query('SELECT rng_state::text AS rng, next_island FROM loreley.archive_state WHERE experiment_id = $1', [experimentId]);
    assert.deepEqual(restoredState, state, "the sampler's state");
    const { rows: metricRows } = await pool.query(`SELECT count(DISTINCT commit_hash)::int AS n FROM loreley.metrics WHERE experiment_id = $1`, [experimentId]);
    assert.equal(metricRows[0].n, ingested.length, 'metrics of every evaluated commit');

    // A second rebuild over a database that holds the experiment refuses without --force.
    const again = spawnLoreley(['rebuild'], { env: fixture.env, cwd: fixture.root });
    assert.equal((await again.waitExit(60_000)).code, 1);
    assert.match(again.stderr(), /^loreley rebuild: the database already holds experiment .*--force/m);
    assert.equal(again.stderr().trim().split('\n').length, 1, 'one line');
    const forced = spawnLoreley(['rebuild', '--force', '--yes'], { env: fixture.env, cwd: fixture.root });
    assert.equal((await forced.waitExit(120_000)).code, 0, forced.stderr());
    assert.deepEqual(await elites(pool, experimentId), before, 'a forced rebuild comes out the same');

    // The run continues from the rebuilt archive and finishes its budget.
    const second = spawnSupervisor(['--workers', '2', '--exit-when-done'], { env: fixture.env, cwd: fixture.root });
    assert.equal((await second.waitExit(180_000)).code, 0, second.stderr().slice(-3000));
    const { rows: done } = await pool.query('SELECT finished_at FROM loreley.experiments WHERE id = $1', [experimentId]);
    assert.ok(done[0].finished_at, 'the experiment finished');
    const bestAfter = await best(pool, experimentId);
    assert.ok(bestAfter && bestAfter.fitness >= bestBefore.fitness, 'the best never got worse');
  } finally {
    killAllSpawned();
    await pool.end();
  }
});
