import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { embeddedDatabaseDirectory } from '../../src/shared/embedded-database.ts';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir } from '../helpers/experiment.ts';
import { killAllSpawned, processesMentioning, readLog, spawnSupervisor, waitFor } from '../helpers/processes.ts';

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

test('SIGTERM while the embedded database is starting: clean exit 0, no server left behind', { timeout: 120_000 }, async () => {
  const fixture = await createFixture({ experimentId: 'startup-signal', database: false });
  const dataDir = path.join(fixture.root, '.loreley-startup');
  const env = { ...fixture.env, LORELEY_DATA_DIR: dataDir };
  const supervisor = spawnSupervisor(['--workers', '1'], { env, cwd: fixture.root });
  const settings = fixtureSettings(fixture, { LORELEY_DATA_DIR: dataDir });
  const logs = logDir(fixture, settings, 'supervisor', 'supervisor');
  try {
    // The first log line is written before the database starts; signal right then.
    await waitFor('the supervisor to begin starting the database', () => readLog(logs).some((line) => /starting the embedded PostgreSQL/.test(String(line.msg))), 30_000, 5, supervisor);
    process.kill(supervisor.pid, 'SIGTERM');
    const exit = await supervisor.waitExit(60_000);
    assert.equal(exit.code, 0, supervisor.stderr().slice(-2000));
    const messages = readLog(logs).map((line) => String(line.msg));
    assert.ok(messages.some((msg) => /stop requested while starting/.test(msg)), messages.join('\n'));
    assert.ok(!messages.some((msg) => msg === 'supervisor started'), 'no child was forked');
    // As root under a private temp dir the cluster lives elsewhere; its location is recorded.
    const databaseDir = embeddedDatabaseDirectory(dataDir, settings.experiment.namespace);
    const locationFile = path.join(databaseDir, 'cluster-location');
    const clusterDir = existsSync(locationFile) ? readFileSync(locationFile, 'utf8').trim() : databaseDir;
    assert.deepEqual(processesMentioning(clusterDir).filter((p) => /postgres/.test(p.cmdline)), [], 'no PostgreSQL left running');
  } finally {
    supervisor.killGroup('SIGKILL');
  }
});
