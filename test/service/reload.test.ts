import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir, openQueue, type Fixture } from '../helpers/experiment.ts';
import { baseEnv, killAllSpawned, NODE, pidAlive, readLog, spawnLoreley, spawnSupervisor, waitFor } from '../helpers/processes.ts';

/**
 * Rolling reload as an operator does it: edit `.env`, run `loreley reload` from another shell.
 * Real supervisor, real PostgreSQL, real git; jobs running across the reload.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

/** The fixture's settings in a .env (what a reload reads again); the credential stays in the environment. */
function writeDotenv(fixture: Fixture, extra: Record<string, string>): void {
  const entries = { ...fixture.env, ...extra };
  const lines = Object.entries(entries)
    .filter(([key]) => !['PATH', 'HOME', 'DATABASE_URL'].includes(key))
    .map(([key, value]) => `${key}='${value}'`);
  writeFileSync(path.join(fixture.root, '.env'), `${lines.join('\n')}\n`);
}

function environ(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
}

test('loreley reload: one child at a time with the new .env, jobs in flight finish, none lost or failed; an invalid .env keeps the old settings', async (t) => {
  const fixture = await createFixture({ experimentId: 'reload', env: { SCHEDULER_LOCK_POLL_SECONDS: '0.2', SCHEDULER_MAX_TOTAL_JOBS: '0' } });
  // Version 2 of the agent: marks the jobs it ran, then does what the fixture's agent does.
  const agentV2 = path.join(fixture.root, 'agent-v2.mjs');
  writeFileSync(agentV2, `import { writeFileSync, readFileSync } from 'node:fs';\nconst context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));\nwriteFileSync(process.argv[2] + '/' + context.jobId + '.v2', '');\nawait import(${JSON.stringify(path.join(fixture.root, 'agent.mjs'))});\n`);
  writeDotenv(fixture, {});
  const env = baseEnv({ DATABASE_URL: fixture.databaseUrl });
  const queue = await openQueue(fixture);
  after(() => queue.close());
  const supervisor = spawnSupervisor(['--workers', '2'], { env, cwd: fixture.root });
  try {
    const settings = fixtureSettings(fixture);
    const supervisorLog = () => readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));
    const pids = async () => {
      const { rows } = await queue.pool.query<{ worker_id: string; pid: number }>(
        "SELECT worker_id, pid FROM workers WHERE experiment_id = $1 AND state <> 'stopped' ORDER BY worker_id",
        [settings.experiment.uuid],
      );
      return Object.fromEntries(rows.map((row) => [row.worker_id, row.pid]));
    };
    await waitFor('every child ready', () => supervisorLog().some((line) => line.msg === 'all children ready'), 60_000, 50, supervisor);
    const before = await waitFor('three children in the workers table', async () => {
      const found = await pids();
      return Object.keys(found).length === 3 ? found : undefined;
    }, 20_000, 50, supervisor);

    // The children carry no credential in their environment; the supervisor does.
    assert.equal(environ(supervisor.pid).DATABASE_URL, fixture.databaseUrl);
    for (const [slot, pid] of Object.entries(before)) assert.equal(environ(pid).DATABASE_URL, undefined, `${slot} has no DATABASE_URL in /proc/${pid}/environ`);

    // Two jobs in flight across the reload.
    const inFlight = [await queue.enqueue({ agent: 'sleep', sleepMs: 2500 }), await queue.enqueue({ agent: 'sleep', sleepMs: 2500 })];
    for (const id of inFlight) await waitFor(`job ${id} running`, () => existsSync(path.join(fixture.recordsDir, `${id}.agent.json`)), 30_000, 20, supervisor);

    writeDotenv(fixture, { WORKER_AGENT_COMMAND: JSON.stringify([NODE, agentV2, fixture.recordsDir]) });
    const started = performance.now();
    const reload = spawnLoreley(['reload'], { env, cwd: fixture.root });
    const exit = await reload.waitExit(180_000);
    t.diagnostic(`reload of 3 children took ${Math.round(performance.now() - started)} ms (2 jobs of 2.5 s in flight)`);
    assert.equal(exit.code, 0, `${reload.stdout()}${reload.stderr()}`);
    assert.match(reload.stdout(), /^sent SIGHUP to the supervisor \(pid \d+\)/);
    assert.match(reload.stdout(), /reload done: 3 children replaced \(worker0001, worker0002, scheduler0001\)/);

    // The jobs in flight finished on the old children: succeeded, first attempt, old agent.
    for (const id of inFlight) {
      const job = await queue.job(id);
      assert.equal(job.status, 'succeeded', `${id}: ${job.lastError}`);
      assert.equal(job.attempts, 1, `${id} ran once`);
      assert.ok(!existsSync(path.join(fixture.recordsDir, `${id}.v2`)), `${id} ran with the agent it started with`);
    }
    // One at a time: each replacement was ready before the old child of the next slot was told to drain.
    const lines = supervisorLog();
    const readyAt = (slot: string) => lines.findIndex((line) => line.slot === slot && line.msg === 'replacement child ready');
    const exitedAt = (slot: string) => lines.findIndex((line) => line.slot === slot && line.msg === 'replaced child exited');
    assert.ok(readyAt('worker0001') < exitedAt('worker0001'), 'worker0001: new ready, then old exited');
    assert.ok(exitedAt('worker0001') < lines.findIndex((line) => line.msg === 'reloading worker0002 (2/3)'), 'worker0002 only after worker0001');
    assert.ok(exitedAt('worker0002') < readyAt('scheduler0001'), 'the scheduler last');

    // New processes in every slot, the old ones gone, still without credentials.
    const after = await waitFor('three new children', async () => {
      const found = await pids();
      return Object.keys(found).length === 3 && Object.entries(found).every(([slot, pid]) => pid !== before[slot]) ? found : undefined;
    }, 20_000, 50, supervisor);
    for (const pid of Object.values(before)) assert.ok(!pidAlive(pid), `old child ${pid} is gone`);
    for (const pid of Object.values(after)) assert.equal(environ(pid).DATABASE_URL, undefined);
    // The scheduler was handed over through its lock: the new one took it.
    const schedulerLines = readLog(logDir(fixture, settings, 'scheduler', 'scheduler0001'));
    const lockHolders = new Set(schedulerLines.filter((line) => /scheduler lock held/.test(String(line.msg))).map((line) => line.pid));
    assert.ok(lockHolders.has(before.scheduler0001) && lockHolders.has(after.scheduler0001), 'old and new scheduler each held the lock');

    // A job after the reload runs with the new settings.
    const fresh = await queue.enqueue({});
    await waitFor('the job after the reload', async () => (await queue.job(fresh)).status === 'succeeded', 30_000, 50, supervisor);
    assert.ok(existsSync(path.join(fixture.recordsDir, `${fresh}.v2`)), 'the new agent command ran');

    // An invalid .env: refused, the children keep running with what they have.
    writeDotenv(fixture, { LOG_LEVEL: 'loud' });
    const refused = spawnLoreley(['reload'], { env: { ...env, LOG_LEVEL: 'info' }, cwd: fixture.root });
    assert.equal((await refused.waitExit(30_000)).code, 1);
    assert.match(refused.stdout(), /reload refused, keeping the current settings: invalid settings: LOG_LEVEL: must be one of/);
    assert.deepEqual(await pids(), after, 'no child was replaced');

    // Nothing failed in all of this.
    const { rows } = await queue.pool.query<{ status: string; count: number }>(
      'SELECT status, count(*)::int AS count FROM evolution_jobs WHERE experiment_id = $1 GROUP BY status',
      [settings.experiment.uuid],
    );
    assert.deepEqual(rows.filter((row) => row.status !== 'succeeded'), [], 'every job succeeded');

    process.kill(supervisor.pid, 'SIGTERM');
    assert.equal((await supervisor.waitExit(60_000)).code, 0);
    assert.ok(!existsSync(path.join(settings.dataDir, `supervisor-${settings.experiment.namespace}.pid`)), 'the pid file is removed on exit');
  } finally {
    supervisor.killGroup();
  }
});

test('loreley reload with no supervisor running: exit 1 and one line saying so', async () => {
  const fixture = await createFixture({ experimentId: 'reload-none' });
  writeDotenv(fixture, {});
  const run = spawnLoreley(['reload'], { env: baseEnv({ DATABASE_URL: fixture.databaseUrl }), cwd: fixture.root });
  assert.equal((await run.waitExit(20_000)).code, 1);
  assert.match(run.stderr(), /^loreley reload: no supervisor is running experiment reload-none-/);
  assert.equal(run.stderr().trimEnd().split('\n').length, 1, run.stderr());
});
