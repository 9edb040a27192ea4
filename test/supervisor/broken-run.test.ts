import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, type Fixture } from '../helpers/experiment.ts';
import { killAllSpawned, NODE, spawnSupervisor } from '../helpers/processes.ts';

/**
 * A broken experiment costs nothing and says why: real supervisors, real workers, real commands.
 * With the evaluator missing no evolution job is ever scheduled; with the agent missing the
 * circuit breaker stops the run after SCHEDULER_MAX_CONSECUTIVE_FAILURES; a run whose every
 * evolution job failed ends non-zero too.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

const FAST = {
  // These runs test what happens at run time when a program cannot start; the supervisor's
  // pre-flight would refuse them before anything starts (exit 78, test/service/doctor.test.ts).
  SUPERVISOR_PREFLIGHT: 'false',
  SCHEDULER_POLL_INTERVAL_SECONDS: '0.2',
  TASKS_POLLING_INTERVAL_SECONDS: '0.5',
  SCHEDULER_MAX_UNFINISHED_JOBS: '2',
  SCHEDULER_SCHEDULE_BATCH_SIZE: '2',
  MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics',
  MAPELITES_FEATURE_DIMENSIONS: 'lines:0:100',
  MAPELITES_FITNESS_METRIC: 'score',
};

async function jobRows(fixture: Fixture): Promise<Array<{ kind: string; status: string; last_error: string | null }>> {
  const settings = fixtureSettings(fixture);
  const client = new pg.Client({ connectionString: fixture.databaseUrl });
  await client.connect();
  try {
    await client.query(`SET search_path = ${settings.database.schema}`);
    const { rows } = await client.query('SELECT kind, status, last_error FROM evolution_jobs WHERE experiment_id = $1 ORDER BY created_at', [settings.experiment.uuid]);
    return rows;
  } finally {
    await client.end();
  }
}

async function run(fixture: Fixture, args: string[]) {
  const supervisor = spawnSupervisor(['--workers', '2', '--exit-when-done', ...args], { env: fixture.env, cwd: fixture.root });
  const exit = await supervisor.waitExit(90_000);
  return { exit, output: `${supervisor.stdout()}\n${supervisor.stderr()}` };
}

describe('a run that cannot succeed', () => {
  test('an evaluator that does not exist fails the baseline: no agent runs, the error is printed, exit non-zero', async () => {
    const fixture = await createFixture({ experimentId: 'no-evaluator', env: { ...FAST, WORKER_EVALUATOR_COMMAND: '/nonexistent/evaluate --json' } });
    const { exit, output } = await run(fixture, ['--max-jobs', '24']);
    assert.notEqual(exit.code, 0, output.slice(-3000));
    assert.match(output, /the run stopped: the baseline evaluation of the root commit [0-9a-f]{12} failed after 1 attempt, so no evolution job was scheduled: evaluator "\/nonexistent\/evaluate" could not start/);
    const rows = await jobRows(fixture);
    assert.deepEqual(rows.map((row) => [row.kind, row.status]), [['baseline', 'failed']], 'no evolution job was scheduled');
    assert.deepEqual(readdirSync(fixture.recordsDir).filter((name) => name.endsWith('.agent.json')), [], 'the agent never ran');
    assert.doesNotMatch(output, /^\s+at /m, 'no stack trace');
  });

  test('an agent that cannot start trips the circuit breaker after SCHEDULER_MAX_CONSECUTIVE_FAILURES', async () => {
    const fixture = await createFixture({
      experimentId: 'no-agent',
      env: { ...FAST, WORKER_AGENT_COMMAND: JSON.stringify(['/nonexistent/mutate']), SCHEDULER_MAX_CONSECUTIVE_FAILURES: '3' },
    });
    const { exit, output } = await run(fixture, ['--max-jobs', '24']);
    assert.notEqual(exit.code, 0, output.slice(-3000));
    assert.match(output, /the run stopped: the last 3 jobs all failed because the mutation agent could not start \(SCHEDULER_MAX_CONSECUTIVE_FAILURES=3\); the latest: agent command "\/nonexistent\/mutate" could not start/);
    const rows = await jobRows(fixture);
    assert.equal(rows[0].status, 'succeeded', 'the baseline passed');
    const evolution = rows.filter((row) => row.kind === 'evolution');
    assert.ok(evolution.length >= 3 && evolution.length <= 3 + 2, `stopped after 3 failures (+ at most the 2 in flight), not at the budget of 24: ${evolution.length} jobs`);
  });

  test('a run whose every evolution job failed, for ordinary reasons, does not exit 0', async () => {
    // `true` changes nothing: each job fails ("made no change"), which is not a systemic failure.
    const fixture = await createFixture({ experimentId: 'all-fail', env: { ...FAST, WORKER_AGENT_COMMAND: JSON.stringify([NODE, '-e', '0']) } });
    const { exit, output } = await run(fixture, ['--max-jobs', '3']);
    assert.notEqual(exit.code, 0, output.slice(-3000));
    assert.match(output, /the run stopped: all 3 evolution jobs failed, none produced a result; the last error: the command agent made no change to the code/);
  });
});
