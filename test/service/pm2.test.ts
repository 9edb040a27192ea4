import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, test } from 'node:test';
import { writeServiceFiles } from '../../src/cli/init-example.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir, openQueue } from '../helpers/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, NODE, pidAlive, readLog, ROOT, waitFor } from '../helpers/processes.ts';

/**
 * The ecosystem file `loreley init` writes, run by the real pm2 (dev dependency) under a PM2_HOME
 * of its own: online and ready, `pm2 stop` drains a job in flight, `pm2 delete` and `pm2 kill`
 * leave nothing running.
 */

const PM2 = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');
const pm2Home = tempDir('loreley-pm2-home-');

function pm2(args: string[], cwd: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(NODE, [PM2, ...args], { cwd, env: { ...env, PM2_HOME: pm2Home }, timeout: 180_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

interface Pm2Process {
  name: string;
  pid: number;
  pm2_env: { status: string; restart_time: number; pm_out_log_path: string; pm_err_log_path: string };
}

after(async () => {
  // Whatever happened, the pm2 daemon of this test goes.
  const pidFile = path.join(pm2Home, 'pm2.pid');
  if (existsSync(pidFile)) {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  await stopTestServer();
});

test('pm2 start ecosystem.config.cjs: online once every child is ready; pm2 stop drains a job in flight; delete and kill leave nothing', async (t) => {
  const fixture = await createFixture({ experimentId: 'pm2', env: { SCHEDULER_MAX_TOTAL_JOBS: '0' } });
  const settings = fixtureSettings(fixture);
  // The experiment as init leaves it: settings in .env, the process file beside it.
  writeFileSync(path.join(fixture.root, '.env'), Object.entries(fixture.env).filter(([key]) => key !== 'PATH' && key !== 'HOME').map(([key, value]) => `${key}='${value}'`).join('\n'));
  writeServiceFiles(fixture.root, { experimentId: fixture.env.EXPERIMENT_ID, workers: 1, drainTimeoutSeconds: 20 });
  const ecosystem = path.join(fixture.root, 'ecosystem.config.cjs');
  const app = (createRequire(import.meta.url)(ecosystem) as { apps: Array<Record<string, unknown>> }).apps[0];
  assert.equal(app.exec_mode, 'fork');
  assert.equal(app.wait_ready, true);
  assert.equal(app.treekill, false);
  assert.equal(app.out_file, '/dev/null');
  assert.ok((app.kill_timeout as number) > 20_000, 'kill_timeout is above the drain timeout');
  assert.equal(app.script, path.join(ROOT, 'bin', 'loreley-supervisor'));
  const name = String(app.name);

  const queue = await openQueue(fixture);
  after(() => queue.close());
  const env = baseEnv();
  const supervisorLog = () => readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));
  const started = performance.now();
  const start = await pm2(['start', ecosystem], fixture.root, env);
  t.diagnostic(`pm2 start returned after ${Math.round(performance.now() - started)} ms`);
  assert.equal(start.code, 0, start.stderr);
  // wait_ready: pm2 start came back only once the supervisor said every child was ready.
  assert.ok(supervisorLog().some((line) => line.msg === 'all children ready'), 'ready before pm2 start returned');

  const list = JSON.parse((await pm2(['jlist'], fixture.root, env)).stdout) as Pm2Process[];
  const processInfo = list.find((p) => p.name === name)!;
  assert.equal(processInfo.pm2_env.status, 'online');
  // The pid pm2 watches is the supervisor itself (the launcher exec'd Node).
  const cmdline = readFileSync(`/proc/${processInfo.pid}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.some((arg) => arg.endsWith('bin/loreley-supervisor.js')), cmdline.join(' '));
  const { rows } = await queue.pool.query<{ pid: number }>("SELECT pid FROM workers WHERE experiment_id = $1 AND state <> 'stopped'", [settings.experiment.uuid]);
  const children = rows.map((row) => row.pid);
  assert.equal(children.length, 2, 'a worker and the scheduler');

  // A job in flight when pm2 stops the app: it finishes (drain), it is not failed or lost.
  const jobId = await queue.enqueue({ agent: 'sleep', sleepMs: 3000 });
  await waitFor('the job to start', () => existsSync(path.join(fixture.recordsDir, `${jobId}.agent.json`)), 30_000);
  const stop = await pm2(['stop', name], fixture.root, env);
  assert.equal(stop.code, 0, stop.stderr);
  const job = await queue.job(jobId);
  assert.equal(job.status, 'succeeded', job.lastError ?? '');
  assert.equal(job.attempts, 1);
  assert.ok(!pidAlive(processInfo.pid), 'the supervisor exited');
  for (const pid of children) assert.ok(!pidAlive(pid), `child ${pid} exited`);
  // pm2 stops with SIGINT: a clean drain, reported as 130 ("interrupted"), not restarted.
  const stopped = supervisorLog().find((line) => line.msg === 'supervisor stopped');
  assert.equal(stopped?.code, 130);
  assert.ok(supervisorLog().some((line) => line.msg === 'draining children' && line.reason === 'SIGINT'));

  // pm2 keeps no copy of Loreley's logs.
  const pm2Logs = path.join(pm2Home, 'logs');
  const copies = existsSync(pm2Logs) ? readdirSync(pm2Logs).filter((file) => statSync(path.join(pm2Logs, file)).size > 0) : [];
  assert.deepEqual(copies, [], 'no pm2 log file with content');

  assert.equal((await pm2(['delete', name], fixture.root, env)).code, 0);
  const daemon = Number(readFileSync(path.join(pm2Home, 'pm2.pid'), 'utf8'));
  assert.equal((await pm2(['kill'], fixture.root, env)).code, 0);
  await waitFor('the pm2 daemon to exit', () => !pidAlive(daemon), 10_000);
});
