import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { startEmbeddedDatabase } from '../../src/shared/embedded-database.ts';
import { createFixture, fixtureSettings, logDir, openQueue } from '../helpers/experiment.ts';
import { killAllSpawned, pidAlive, processesMentioning, readLog, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture } from './helpers.ts';

/**
 * Item 5 of issue 7: the embedded PostgreSQL stops within 10 s of its supervisor's death, also when
 * the supervisor is SIGKILLed (its watcher sees the pipe close). Killed twice under a running
 * experiment; then a clean run to the end, and the audit.
 */

const running: Spawned[] = [];
after(() => {
  for (const spawned of running) spawned.killGroup('SIGKILL');
  killAllSpawned();
});

const KILLS = 2;

test('SIGKILL of the supervisor: its embedded database is gone within 10 s, and the next run uses it again', async (t) => {
  const fixture = await createFixture({ experimentId: 'embedded-kill', database: false, env: { SCHEDULER_POLL_INTERVAL_SECONDS: '0.3' } });
  const settings = fixtureSettings(fixture);
  const directory = path.join(fixture.env.LORELEY_DATA_DIR, 'postgres', settings.experiment.namespace);
  const postmasterPid = () => {
    try {
      return Number(readFileSync(path.join(directory, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    } catch {
      return undefined;
    }
  };
  const goneAfterMs: number[] = [];
  const supervisorLog = () => readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));

  for (let kill = 0; kill < KILLS; kill += 1) {
    const supervisor = spawnSupervisor(['--workers', '2'], { env: fixture.env, cwd: fixture.root });
    running.push(supervisor);
    // Under a running experiment: wait until a job has been recorded in this run.
    const before = supervisorLog().length;
    await waitFor('a worker busy with a job', () => supervisorLog().slice(before).some((line) => line.msg === 'child state' && line.state === 'busy'), 120_000, 50, supervisor);
    const server = postmasterPid();
    assert.ok(server && pidAlive(server), 'the embedded server runs');
    const killed = performance.now();
    process.kill(supervisor.pid, 'SIGKILL');
    await waitFor('the embedded server to stop', () => !pidAlive(server), 10_000, 20);
    goneAfterMs.push(Math.round(performance.now() - killed));
    // The workers and scheduler leave on their own once their supervisor is gone.
    await waitFor('no process left using the data directory', () => processesMentioning(directory).length === 0 && processesMentioning(fixture.root).length === 0, 30_000, 50);
  }
  t.diagnostic(`supervisor SIGKILL → embedded server gone (ms): ${goneAfterMs.join(', ')}`);
  assert.ok(Math.max(...goneAfterMs) < 10_000);

  const final = spawnSupervisor(['--workers', '2', '--exit-when-done', '--max-jobs', '6'], { env: fixture.env, cwd: fixture.root });
  running.push(final);
  assert.equal((await final.waitExit(180_000)).code, 0, final.stderr().slice(-3000));
  assert.ok(!existsSync(path.join(directory, 'data', 'postmaster.pid')), 'stopped cleanly at the end');

  // The audit reads the books from the same cluster, started by the test for the purpose.
  const database = await startEmbeddedDatabase({ directory });
  try {
    const queue = await openQueue(fixture, database.url);
    await queue.close();
    const report = await auditFixture(fixture, queue, { databaseUrl: database.url, expectIngestion: true, ignorePids: [postmasterPid() ?? 0] , root: path.join(fixture.root, 'clone-worktrees-none') });
    assertAudit(report);
    // The run's own processes, checked apart from the server the audit itself needs.
    const left = processesMentioning(fixture.root).filter((p) => !p.cmdline.includes(path.join(directory, 'data')) && !/postgres/.test(p.cmdline));
    assert.deepEqual(left, [], 'no Loreley process left');
    t.diagnostic(`audit counts: ${JSON.stringify(report.counts)}`);
  } finally {
    await database.stop();
  }
});
