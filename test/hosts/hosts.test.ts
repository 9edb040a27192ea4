import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, type Fixture } from '../helpers/experiment.ts';
import { killAllSpawned, spawnLoreley, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * Two "hosts" on this machine: each its own directory, LORELEY_DATA_DIR, base clone, logs, host id
 * and worker id prefix; one database and one bare remote between them, as on two machines.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

interface Host {
  readonly name: string;
  readonly dir: string;
  readonly env: Record<string, string>;
}

function host(fixture: Fixture, name: string): Host {
  const dir = path.join(fixture.root, name);
  mkdirSync(dir, { recursive: true });
  return {
    name,
    dir,
    env: {
      ...fixture.env,
      LORELEY_HOST_ID: name,
      LORELEY_DATA_DIR: path.join(dir, 'data'),
      WORKER_REPO_WORKTREE: path.join(dir, 'data', 'clone'),
      LOGS_BASE_DIR: dir,
      SUPERVISOR_WORKER_ID_PREFIX: `${name}-w`,
    },
  };
}

function start(h: Host, args: string[]): Spawned {
  return spawnSupervisor(['--workers', '2', ...args], { env: h.env, cwd: h.dir });
}

const RUN_ENV = {
  SCHEDULER_POLL_INTERVAL_SECONDS: '0.2',
  SCHEDULER_LOCK_POLL_SECONDS: '0.5',
  SCHEDULER_MAX_UNFINISHED_JOBS: '4',
  MAPELITES_FITNESS_METRIC: 'lines',
  // A cell per lineage depth (the agent adds a line per generation), so every depth's first
  // commit, whichever host made it, stays an elite to build on.
  MAPELITES_ARCHIVE_TYPE: 'grid',
  MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics',
  MAPELITES_FEATURE_DIMENSIONS: 'lines:0:32',
  MAPELITES_ARCHIVE_CELLS_PER_DIM: '32',
};

interface JobRow {
  id: string;
  last_error: string | null;
  worker_host: string | null;
  base_commit: string;
  result_commit: string | null;
  status: string;
}

async function jobs(pool: pg.Pool, experimentId: string): Promise<JobRow[]> {
  const { rows } = await pool.query<JobRow>(
    `SELECT id, worker_host, base_commit, result_commit, status, last_error FROM loreley.evolution_jobs WHERE experiment_id = $1 AND kind = 'evolution'`,
    [experimentId],
  );
  return rows;
}

describe('two hosts, one database, one remote', () => {
  test('a host without a scheduler: both take jobs, each builds on the other\'s commits, status groups them, and --exit-when-done ends both', async () => {
    // One cell: the archive's single elite is the deepest commit, so every job builds on whichever
    // host made it. Pausing one host's workers (SIGSTOP) while the other works makes "each host
    // works from a commit the other pushed" certain instead of likely.
    const fixture = await createFixture({ experimentId: 'two-hosts', env: { ...RUN_ENV, MAPELITES_ARCHIVE_CELLS_PER_DIM: '1', SCHEDULER_MAX_TOTAL_JOBS: '30' } });
    const experimentId = fixtureSettings(fixture).experiment.uuid;
    const pool = new pg.Pool({ connectionString: fixture.databaseUrl, max: 2 });
    const paused: number[] = [];
    try {
      const a = host(fixture, 'host-a');
      const b = host(fixture, 'host-b');
      const eliteHost = async () => {
        const { rows } = await pool.query(
          `SELECT j.worker_host FROM loreley.archive_elites e JOIN loreley.evolution_jobs j ON j.id = e.job_id WHERE e.experiment_id = $1 AND j.kind = 'evolution'`,
          [experimentId],
        );
        return rows[0]?.worker_host as string | undefined;
      };
      const workerPids = async (name: string) =>
        (await pool.query(`SELECT pid FROM loreley.workers WHERE experiment_id = $1 AND host = $2 AND role = 'worker'`, [experimentId, name])).rows.map((row) => row.pid as number);
      const builtOn = async (worker: string, maker: string) => {
        const { rows } = await pool.query(
          `SELECT 1 FROM loreley.evolution_jobs j JOIN loreley.evolution_jobs p ON p.result_commit = j.base_commit AND p.experiment_id = j.experiment_id
            WHERE j.experiment_id = $1 AND j.status = 'succeeded' AND j.worker_host = $2 AND p.worker_host = $3 LIMIT 1`,
          [experimentId, worker, maker],
        );
        return rows.length > 0;
      };
      /** Pauses `idle`'s workers until `busy` has built on `maker`'s commit and holds the elite. */
      const handOver = async (idle: string, busy: string, maker: string, watch: Spawned) => {
        const pids = await workerPids(idle);
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        paused.push(...pids);
        await waitFor(`${busy} building on ${maker}'s commit`, async () => (await builtOn(busy, maker)) && (await eliteHost()) === busy, 120_000, 100, watch);
        for (const pid of pids) process.kill(pid, 'SIGCONT');
        paused.length = 0;
      };

      const first = start(a, ['--exit-when-done']);
      await waitFor('host-a holding the elite', async () => (await eliteHost()) === 'host-a', 120_000, 100, first);
      const second = start(b, ['--no-scheduler', '--exit-when-done']);
      await waitFor('host-b workers up', async () => (await workerPids('host-b')).length === 2, 60_000, 100, second);

      // Both hosts' processes reported in: status shows them grouped by host.
      const status = spawnLoreley(['status'], { env: b.env, cwd: b.dir });
      assert.equal((await status.waitExit(30_000)).code, 0, status.stderr());
      const lines = status.stdout().trimEnd().split('\n');
      const processes = lines.slice(lines.indexOf('processes') + 1);
      const headerA = processes.findIndex((line) => /^  host host-a: supervisor pid \d+ on /.test(line));
      const headerB = processes.findIndex((line) => /^  host host-b: supervisor pid \d+ on /.test(line));
      assert.ok(headerA >= 0 && headerB > headerA, status.stdout());
      const groupA = processes.slice(headerA + 1, headerB);
      const groupB = processes.slice(headerB + 1);
      assert.deepEqual(groupA.map((line) => line.trim().split(/\s+/)[0]), ['host-a/host-a-w0001', 'host-a/host-a-w0002', 'host-a/scheduler0001']);
      assert.deepEqual(groupB.map((line) => line.trim().split(/\s+/)[0]), ['host-b/host-b-w0001', 'host-b/host-b-w0002']);

      await handOver('host-a', 'host-b', 'host-a', first);
      await handOver('host-b', 'host-a', 'host-b', first);

      // The scheduler's host finishes the run; the host without one learns it from the database.
      const exitA = await first.waitExit(240_000);
      assert.equal(exitA.code, 0, first.stderr().slice(-3000));
      const exitB = await second.waitExit(30_000);
      assert.equal(exitB.code, 0, second.stderr().slice(-3000));
      assert.match(second.stderr(), /the run is finished \(--exit-when-done\)/);

      const all = await jobs(pool, experimentId);
      assert.equal(all.length, 30);
      assert.ok(all.every((job) => job.status === 'succeeded'), JSON.stringify(all.map((job) => [job.status, job.worker_host, job.last_error])));
      const byHost = (name: string) => all.filter((job) => job.worker_host === name);
      assert.ok(byHost('host-a').length > 0 && byHost('host-b').length > 0, 'both hosts took jobs');
      const { rows: unnoted } = await pool.query(
        `SELECT count(*)::int AS n FROM loreley.evolution_jobs WHERE experiment_id = $1 AND ingestion_status IN ('ingested', 'rejected') AND noted_at IS NULL`,
        [experimentId],
      );
      assert.equal(unnoted[0].n, 0, "every candidate's git note is on the remote, wherever its commit was made");
      const { rows: hostRows } = await pool.query(`SELECT host, state FROM loreley.hosts WHERE experiment_id = $1 ORDER BY host`, [experimentId]);
      assert.deepEqual(hostRows, [{ host: 'host-a', state: 'stopped' }, { host: 'host-b', state: 'stopped' }]);
    } finally {
      for (const pid of paused) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // Gone.
        }
      }
      killAllSpawned();
      await pool.end();
    }
  });

  test('both run a scheduler: one stands by, a second supervisor under a live host id is refused, and SIGKILL of the active one hands over within seconds', async () => {
    const fixture = await createFixture({ experimentId: 'failover', env: { ...RUN_ENV, SCHEDULER_MAX_TOTAL_JOBS: '16' } });
    const experimentId = fixtureSettings(fixture).experiment.uuid;
    const pool = new pg.Pool({ connectionString: fixture.databaseUrl, max: 2 });
    try {
      const a = host(fixture, 'host-a');
      const b = host(fixture, 'host-b');
      const first = start(a, ['--exit-when-done']);
      await waitFor('host-a scheduling', async () => {
        const { rows } = await pool.query(`SELECT state FROM loreley.workers WHERE experiment_id = $1 AND host = 'host-a' AND role = 'scheduler'`, [experimentId]);
        return rows[0] && rows[0].state !== 'standby' && rows[0].state !== 'starting';
      }, 60_000, 100, first);
      const second = start(b, ['--exit-when-done']);
      await waitFor('host-b standing by', async () => {
        const { rows } = await pool.query(`SELECT state FROM loreley.workers WHERE experiment_id = $1 AND host = 'host-b' AND role = 'scheduler'`, [experimentId]);
        return rows[0]?.state === 'standby';
      }, 60_000, 100, second);
      const { rows: schedulers } = await pool.query(`SELECT host, worker_id FROM loreley.workers WHERE experiment_id = $1 AND role = 'scheduler' ORDER BY host`, [experimentId]);
      assert.deepEqual(schedulers, [{ host: 'host-a', worker_id: 'scheduler0001' }, { host: 'host-b', worker_id: 'scheduler0001' }], 'presence is per host and slot');

      // A third supervisor claiming a live host's id is refused: one line, exit 1.
      const intruder = spawnSupervisor(['--workers', '1'], { env: { ...b.env, LORELEY_DATA_DIR: path.join(b.dir, 'other') }, cwd: b.dir });
      assert.equal((await intruder.waitExit(60_000)).code, 1);
      assert.match(intruder.stderr(), /host id host-b is in use by a live supervisor \(pid \d+ on .*\): give each supervisor of an experiment its own LORELEY_HOST_ID/);

      await waitFor('a few ingestions', async () => {
        const { rows } = await pool.query(`SELECT count(*)::int AS n FROM loreley.evolution_jobs WHERE experiment_id = $1 AND ingestion_status IN ('ingested', 'rejected')`, [experimentId]);
        return rows[0].n >= 4;
      }, 120_000, 100, first);
      const killedAt = Date.now();
      process.kill(first.pid, 'SIGKILL');
      await waitFor('host-b scheduling', async () => {
        const { rows } = await pool.query(`SELECT state FROM loreley.workers WHERE experiment_id = $1 AND host = 'host-b' AND role = 'scheduler'`, [experimentId]);
        return rows[0] && rows[0].state !== 'standby';
      }, 30_000, 50, second);
      const takeover = Date.now() - killedAt;
      process.stdout.write(`ℹ scheduler takeover after SIGKILL of its supervisor: ${takeover} ms\n`);
      assert.ok(takeover < 10_000, `took over in ${takeover} ms`);

      const exitB = await second.waitExit(240_000);
      assert.equal(exitB.code, 0, second.stderr().slice(-3000));
      const all = await jobs(pool, experimentId);
      assert.equal(all.length, 16);
      assert.ok(all.every((job) => job.status === 'succeeded'), JSON.stringify(all.map((job) => [job.status, job.worker_host, job.last_error])));
      const { rows } = await pool.query('SELECT finished_at FROM loreley.experiments WHERE id = $1', [experimentId]);
      assert.ok(rows[0].finished_at);
    } finally {
      killAllSpawned();
      await pool.end();
    }
  });
});
