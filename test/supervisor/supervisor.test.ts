import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { stopTestServer, testServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir, openQueue, type Fixture, type QueueClient } from '../helpers/experiment.ts';
import {
  allFiles,
  baseEnv,
  jsonlFiles,
  killAllSpawned,
  pidAlive,
  processesMentioning,
  readLog,
  spawnSupervisor,
  waitFor,
  type LogLine,
  type Spawned,
} from '../helpers/processes.ts';
import { tempDir } from '../helpers/git.ts';

/**
 * The supervisor as a user runs it: `bin/loreley-supervisor.js` as a real process tree on a real
 * PostgreSQL, with real git remotes, agents and evaluators in temp dirs.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

const REQUIRED_FIELDS = ['time', 'level', 'msg', 'workerId', 'role', 'pid', 'host'] as const;

interface WorkerRow {
  worker_id: string;
  role: string;
  pid: number;
  state: string;
  host: string;
}

async function workerRows(queue: QueueClient): Promise<WorkerRow[]> {
  const { rows } = await queue.pool.query<WorkerRow>(
    'SELECT worker_id, role, pid, state, host FROM workers WHERE experiment_id = $1 ORDER BY worker_id',
    [queue.settings.experiment.uuid],
  );
  return rows;
}

function supervisorLog(fixture: Fixture, queue: { settings: QueueClient['settings'] }): LogLine[] {
  return readLog(logDir(fixture, queue.settings, 'supervisor', 'supervisor'));
}

/** Sends SIGTERM to the supervisor alone (as systemd or pm2 would) and waits for its exit. */
async function terminate(supervisor: Spawned, timeoutMs = 30_000): Promise<number | null> {
  process.kill(supervisor.pid, 'SIGTERM');
  const exit = await supervisor.waitExit(timeoutMs);
  return exit.code;
}

describe('a supervisor with 4 workers and a scheduler', () => {
  let fixture: Fixture;
  let queue: QueueClient;
  let supervisor: Spawned;

  after(async () => {
    supervisor?.killGroup('SIGKILL');
    await queue?.close();
  });

  test('starts 4 workers and a scheduler with distinct stable ids, each with its own JSONL log and a workers row', async (t) => {
    fixture = await createFixture({ experimentId: 'four-workers' });
    queue = await openQueue(fixture);
    const started = performance.now();
    supervisor = spawnSupervisor(['--workers', '4'], { env: fixture.env, cwd: fixture.root });

    const expected = ['scheduler0001', 'worker0001', 'worker0002', 'worker0003', 'worker0004'];
    const rows = await waitFor(
      'five children idle in the workers table',
      async () => {
        const current = await workerRows(queue);
        return current.length === 5 && current.every((row) => row.state === 'idle') ? current : undefined;
      },
      60_000,
      100,
      supervisor,
    );
    t.diagnostic(`4 workers + scheduler idle after ${Math.round(performance.now() - started)} ms`);
    assert.deepEqual(rows.map((row) => row.worker_id), expected);
    assert.deepEqual(rows.map((row) => row.role), ['scheduler', 'worker', 'worker', 'worker', 'worker']);
    assert.equal(new Set(rows.map((row) => row.pid)).size, 5, 'every child is its own process');
    for (const row of rows) {
      assert.equal(row.host, os.hostname());
      assert.ok(pidAlive(row.pid), `${row.worker_id} (pid ${row.pid}) is alive`);
      assert.notEqual(row.pid, supervisor.pid);
    }

    // One log directory per child, named by role and id; every line carries the required fields.
    const namespace = queue.settings.experiment.namespace;
    for (const row of rows) {
      const directory = logDir(fixture, queue.settings, row.role, row.worker_id);
      const files = jsonlFiles(directory);
      assert.ok(files.length >= 1, `${row.worker_id} has a JSONL file in ${directory}`);
      for (const file of files) assert.match(path.basename(file), new RegExp(`^${row.worker_id}\\.\\d+\\.jsonl$`));
      const lines = readLog(directory);
      assert.ok(lines.length > 0);
      for (const line of lines) {
        for (const field of REQUIRED_FIELDS) assert.ok(line[field] !== undefined, `${row.worker_id} line ${JSON.stringify(line)} has ${field}`);
        assert.equal(line.workerId, row.worker_id);
        assert.equal(line.role, row.role);
        assert.equal(line.pid, row.pid);
        assert.equal(line.host, os.hostname());
        assert.ok(!Number.isNaN(Date.parse(line.time)), 'time is an ISO timestamp');
        assert.ok(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(line.level), `level is a label, got ${line.level}`);
      }
      assert.ok(lines.some((line) => line.msg === `${row.role} online`), `${row.worker_id} logged that it is online`);
    }
    const own = supervisorLog(fixture, queue);
    assert.ok(own.length > 0, 'the supervisor has its own log');
    for (const line of own) {
      for (const field of REQUIRED_FIELDS) assert.ok(line[field] !== undefined, `supervisor line has ${field}`);
      assert.equal(line.role, 'supervisor');
      assert.equal(line.workerId, 'supervisor');
    }
    const startLine = own.find((line) => line.msg === 'supervisor started');
    assert.deepEqual(startLine?.slots, [...expected.slice(1), 'scheduler0001']);
    assert.ok(existsSync(path.join(fixture.logsDir, namespace)), 'logs live under the namespace');
  });

  test(
    "every supervisor log line's pid is the supervisor's own",
    () => {
      const own = supervisorLog(fixture, queue);
      const wrong = own.filter((line) => line.pid !== supervisor.pid);
      assert.deepEqual(wrong.map((line) => line.msg), [], `lines whose pid is not the supervisor's (${supervisor.pid})`);
    },
  );

  test('a SIGKILLed worker comes back with the same id', async (t) => {
    assert.ok(supervisor, 'needs the supervisor of the previous test');
    const before = (await workerRows(queue)).find((row) => row.worker_id === 'worker0002')!;
    const logPids = new Set(readLog(logDir(fixture, queue.settings, 'worker', 'worker0002')).map((line) => line.pid));
    assert.deepEqual([...logPids], [before.pid], 'the log file and the workers table agree on the pid');
    const killedAt = performance.now();
    process.kill(before.pid, 'SIGKILL');

    const after = await waitFor(
      'worker0002 back with a new pid',
      async () => {
        const row = (await workerRows(queue)).find((r) => r.worker_id === 'worker0002');
        return row && row.pid !== before.pid && row.state === 'idle' ? row : undefined;
      },
      30_000,
      50,
      supervisor,
    );
    const restartMs = Math.round(performance.now() - killedAt);
    t.diagnostic(`worker0002 restarted (SIGKILL to idle again) in ${restartMs} ms (backoff 100 ms)`);
    assert.ok(pidAlive(after.pid));
    assert.ok(!pidAlive(before.pid));
    assert.equal(after.role, 'worker');
    const lines = readLog(logDir(fixture, queue.settings, 'worker', 'worker0002'));
    assert.ok(lines.some((line) => line.pid === after.pid && line.msg === 'worker online'), 'the new process logs into the same slot directory');
    const own = supervisorLog(fixture, queue);
    assert.ok(own.some((line) => line.slot === 'worker0002' && /exited unexpectedly \(signal SIGKILL\): restarting in 100 ms/.test(line.msg)));
    // The others were not disturbed.
    const others = (await workerRows(queue)).filter((row) => row.worker_id !== 'worker0002');
    assert.ok(others.every((row) => pidAlive(row.pid)));
  });

  test('SIGTERM with idle children: every child stops and the supervisor exits 0', async () => {
    const pids = (await workerRows(queue)).map((row) => row.pid);
    assert.equal(await terminate(supervisor), 0);
    for (const pid of pids) assert.ok(!pidAlive(pid), `child ${pid} is gone`);
    const lines = supervisorLog(fixture, queue);
    assert.equal(lines.filter((line) => line.msg === 'child exited').length, 5);
    assert.equal(lines.at(-1)?.msg, 'supervisor stopped');
  });

  test(
    'after a drain every workers row says stopped',
    async () => {
      const rows = await workerRows(queue);
      assert.ok(rows.every((row) => row.state === 'stopped'), `every workers row says stopped: ${JSON.stringify(rows)}`);
    },
  );
});

describe('a worker slot that always crashes', () => {
  test('is restarted with growing backoff, then marked errored; with every worker slot errored the supervisor exits non-zero', async (t) => {
    const fixture = await createFixture({ experimentId: 'crash-loop' });
    // Injected from outside: every worker child exits during start-up; the scheduler is healthy.
    const crash = path.join(fixture.root, 'crash-workers.mjs');
    writeFileSync(crash, "if (process.env.LORELEY_ROLE === 'worker') process.exit(3);\n");
    const env = {
      ...fixture.env,
      NODE_OPTIONS: `--import=${crash}`,
      SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '50',
      SUPERVISOR_CRASH_LOOP_MAX_RESTARTS: '3',
    };
    const started = performance.now();
    const supervisor = spawnSupervisor(['--workers', '2'], { env, cwd: fixture.root });
    const exit = await supervisor.waitExit(60_000);
    t.diagnostic(`supervisor gave up and exited in ${Math.round(performance.now() - started)} ms`);
    assert.equal(exit.code, 1, `exit code (stderr tail: ${supervisor.stderr().slice(-2000)})`);

    const settings = fixtureSettings(fixture);
    const lines = supervisorLog(fixture, { settings });
    for (const slot of ['worker0001', 'worker0002']) {
      const restarts = lines.filter((line) => line.slot === slot && line.level === 'warn' && /restarting in \d+ ms/.test(line.msg));
      const delays = restarts.map((line) => Number(/restarting in (\d+) ms/.exec(line.msg)![1]));
      assert.deepEqual(delays, [50, 100, 200], `${slot} backs off 50, 100, 200 ms`);
      for (const line of restarts) assert.match(line.msg, /exited unexpectedly \(code 3\)/);
      // The backoff is real: each restart comes at least its delay after the crash.
      const states = lines.filter((line) => line.slot === slot && line.msg === 'child state');
      for (const [index, delay] of delays.entries()) {
        const backoff = states.filter((line) => line.state === 'backoff')[index];
        const next = states.find((line) => line.state === 'starting' && Date.parse(line.time) >= Date.parse(backoff.time) && line !== states[0]);
        assert.ok(next, `${slot} restarted after backoff ${index + 1}`);
        assert.ok(Date.parse(next.time) - Date.parse(backoff.time) >= delay - 2, `${slot} waited ${delay} ms`);
      }
      const errored = lines.find((line) => line.slot === slot && line.level === 'error' && /slot marked errored/.test(line.msg));
      assert.ok(errored, `${slot} is marked errored loudly`);
      assert.equal(errored.crashes, 4);
      assert.ok(states.some((line) => line.state === 'errored'), `${slot} state errored`);
    }
    assert.ok(lines.some((line) => line.level === 'fatal' && /every worker slot is errored/.test(line.msg)));
    const stopped = lines.find((line) => line.msg === 'supervisor stopped');
    assert.equal(stopped?.code, 1);
    // The healthy scheduler was drained, not left behind.
    assert.ok(lines.some((line) => line.slot === 'scheduler0001' && line.msg === 'child exited'));
    assert.doesNotMatch(supervisor.stderr(), /^\s+at /m, 'no stack trace');
  });
});

describe('children that stop answering or lose their supervisor', () => {
  test('a child whose event loop is blocked is killed by the heartbeat watchdog and restarted', async (t) => {
    const fixture = await createFixture({ experimentId: 'watchdog' });
    // Injected from outside: the first worker incarnation blocks its event loop a while after start.
    const flag = path.join(fixture.root, 'blocked-once');
    const block = path.join(fixture.root, 'block-worker.mjs');
    writeFileSync(
      block,
      `import { existsSync, writeFileSync } from 'node:fs';
if (process.env.LORELEY_ROLE === 'worker' && !existsSync(${JSON.stringify(flag)})) {
  writeFileSync(${JSON.stringify(flag)}, String(process.pid));
  setTimeout(() => { const end = Date.now() + 120000; while (Date.now() < end); }, 5000);
}
`,
    );
    const env = { ...fixture.env, NODE_OPTIONS: `--import=${block}`, SUPERVISOR_HEARTBEAT_TIMEOUT_MS: '1000' };
    const queue = await openQueue(fixture);
    const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env, cwd: fixture.root });
    try {
      await waitFor('the first worker to start', () => existsSync(flag), 30_000, 50, supervisor);
      const blockedPid = Number(readFileSync(flag, 'utf8'));
      const killed = await waitFor('the watchdog to kill the blocked child', () =>
        supervisorLog(fixture, queue).find((line) => line.msg === 'child stopped heartbeating (blocked event loop?): killing it'), 30_000, 100, supervisor);
      t.diagnostic(`killed after ${killed.silentMs as number} ms of silence (timeout 1000 ms)`);
      assert.equal(killed.slot, 'worker0001');
      const row = await waitFor('worker0001 back with a new pid', async () => {
        const found = (await workerRows(queue)).find((r) => r.worker_id === 'worker0001');
        return found && found.pid !== blockedPid && found.state === 'idle' ? found : undefined;
      }, 30_000, 100, supervisor);
      assert.ok(!pidAlive(blockedPid));
      assert.ok(pidAlive(row.pid));
      assert.ok(supervisorLog(fixture, queue).some((line) => line.slot === 'worker0001' && /was unresponsive and was killed: restarting in \d+ ms/.test(line.msg)));
      assert.equal(await terminate(supervisor), 0);
    } finally {
      supervisor.killGroup();
      await queue.close();
    }
  });

  describe('when the supervisor is SIGKILLed', () => {
    let fixture: Fixture;
    let queue: QueueClient;
    let supervisor: Spawned;
    let jobId: string;
    after(async () => {
      supervisor?.killGroup();
      await queue?.close();
    });

    test('its children exit by themselves and take their agent along (no orphans)', async (t) => {
      fixture = await createFixture({ experimentId: 'orphans' });
      queue = await openQueue(fixture);
      supervisor = spawnSupervisor(['--workers', '1'], { env: fixture.env, cwd: fixture.root });
      jobId = await queue.enqueue({ agent: 'sleep', sleepMs: 60_000 });
      const agentRecord = path.join(fixture.recordsDir, `${jobId}.agent.json`);
      await waitFor('the agent to start', () => existsSync(agentRecord), 60_000, 50, supervisor);
      const agentPid = (JSON.parse(readFileSync(agentRecord, 'utf8')) as { pid: number }).pid;
      // The scheduler may report in after the worker has started its job (a loaded machine).
      const rows = await waitFor('both children to report in', async () => ((await workerRows(queue)).length === 2 ? workerRows(queue) : undefined), 30_000, 50, supervisor);
      const children = rows.map((row) => row.pid);
      assert.equal(children.length, 2);
      const killedAt = performance.now();
      process.kill(supervisor.pid, 'SIGKILL');
      await waitFor('the children and the agent to exit', () => [...children, agentPid].every((pid) => !pidAlive(pid)), 20_000, 50);
      t.diagnostic(`children and agent gone ${Math.round(performance.now() - killedAt)} ms after the supervisor was killed`);
    });

    test(
      'the job in hand is handed back to the queue',
      async () => {
        assert.ok(jobId, 'needs the previous test');
        const job = await waitFor('the job to be handed back', async () => {
          const current = await queue.job(jobId);
          return current.status === 'queued' ? current : undefined;
        }, 5000).catch(async (error) => {
          const current = await queue.job(jobId);
          throw new Error(`${(error as Error).message}; the job is ${current.status} (attempts ${current.attempts})`);
        });
        assert.equal(job.attempts, 0);
        const worker = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
        assert.ok(worker.some((line) => line.msg === 'supervisor is gone (IPC disconnected): stopping'));
      },
    );
  });
});

describe('SIGTERM during a running job', () => {
  async function runningJob(fixture: Fixture, drainTimeout: string, payload: Record<string, unknown>) {
    const queue = await openQueue(fixture);
    const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler', '--drain-timeout', drainTimeout], { env: fixture.env, cwd: fixture.root });
    const jobId = await queue.enqueue(payload);
    const agentRecord = path.join(fixture.recordsDir, `${jobId}.agent.json`);
    await waitFor('the agent to start', () => existsSync(agentRecord), 60_000, 50, supervisor);
    const agent = JSON.parse(readFileSync(agentRecord, 'utf8')) as { pid: number };
    assert.equal((await queue.job(jobId)).status, 'running');
    return { queue, supervisor, jobId, agentPid: agent.pid };
  }

  test('a job that finishes within the drain timeout succeeds and the supervisor exits 0', async (t) => {
    const fixture = await createFixture({ experimentId: 'drain-finish' });
    const { queue, supervisor, jobId, agentPid } = await runningJob(fixture, '30', { agent: 'sleep', sleepMs: 1500 });
    try {
      const signalled = performance.now();
      assert.equal(await terminate(supervisor), 0, supervisor.stderr().slice(-2000));
      t.diagnostic(`drained (job finished) and exited ${Math.round(performance.now() - signalled)} ms after SIGTERM`);
      const job = await queue.job(jobId);
      assert.equal(job.status, 'succeeded');
      assert.equal(job.attempts, 1);
      assert.ok(job.resultCommit);
      const queueJobs = await queue.queueJobs();
      assert.deepEqual(queueJobs.map((q) => q.state), ['completed']);
      assert.ok(!pidAlive(agentPid), 'the agent is gone');
      const worker = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
      assert.ok(worker.some((line) => line.msg === 'waiting for the job in hand'));
      assert.ok(worker.some((line) => line.msg === 'job complete' && line.jobId === jobId));
    } finally {
      supervisor.killGroup();
      await queue.close();
    }
  });

  test('a job past --drain-timeout is handed back to the queue (not failed, attempt returned) and runs later', async (t) => {
    const fixture = await createFixture({ experimentId: 'drain-handback' });
    const { queue, supervisor, jobId, agentPid } = await runningJob(fixture, '1', { agent: 'sleep', sleepMs: 30_000 });
    try {
      const signalled = performance.now();
      assert.equal(await terminate(supervisor), 0, supervisor.stderr().slice(-2000));
      t.diagnostic(`drained (job handed back) and exited ${Math.round(performance.now() - signalled)} ms after SIGTERM with --drain-timeout 1`);
      const job = await queue.job(jobId);
      assert.equal(job.status, 'queued');
      assert.equal(job.attempts, 0, 'the drained attempt does not count');
      assert.equal(job.resultCommit, null);
      const queueJobs = await queue.queueJobs();
      assert.equal(queueJobs.length, 2, JSON.stringify(queueJobs));
      const [old, fresh] = queueJobs;
      assert.equal(old.state, 'completed', 'the interrupted queue job is closed, not failed');
      assert.equal(fresh.state, 'created', 'a fresh queue job waits for the next worker');
      assert.equal(fresh.data.jobId, jobId);
      assert.equal(fresh.retry_count, 0);
      assert.equal(job.queueJobId, fresh.id);
      assert.ok(!pidAlive(agentPid), `the agent (pid ${agentPid}) did not outlive the drain`);
      assert.ok(!existsSync(path.join(`${fixture.worktree}-worktrees`, jobId)), 'the worktree is removed');
      const worker = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
      assert.ok(worker.some((line) => line.msg === 'job handed back to the queue' && line.jobId === jobId));
      assert.ok(!worker.some((line) => line.msg.startsWith('job failed')), 'nothing is logged as a failure');

      // Never lost: the next supervisor runs it (the agent now edits instead of sleeping).
      await queue.pool.query(`UPDATE evolution_jobs SET payload = '{"agent": "edit"}' WHERE id = $1`, [jobId]);
      const again = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
      try {
        const done = await waitFor('the handed-back job to succeed', async () => {
          const current = await queue.job(jobId);
          return current.status === 'succeeded' || current.status === 'failed' ? current : undefined;
        }, 60_000, 100, again);
        assert.equal(done.status, 'succeeded', done.lastError ?? '');
        assert.equal(done.attempts, 1);
        assert.equal(await terminate(again), 0);
      } finally {
        again.killGroup();
      }
    } finally {
      supervisor.killGroup();
      await queue.close();
    }
  });
});

describe('bad settings and flags', () => {
  const cwd = tempDir('loreley-empty-');

  test('an empty environment: exit 1, one line per problem naming the variable, no stack trace', async () => {
    const run = spawnSupervisor([], { env: baseEnv(), cwd });
    const exit = await run.waitExit(20_000);
    assert.equal(exit.code, 1);
    const stderr = run.stderr();
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
    const lines = stderr.trimEnd().split('\n');
    assert.match(lines[0], /^loreley-supervisor: invalid settings/);
    for (const name of ['EXPERIMENT_ID', 'WORKER_REPO_REMOTE_URL', 'WORKER_EVALUATOR_COMMAND', 'WORKER_AGENT_COMMAND']) {
      const mentions = lines.filter((line) => line.includes(name));
      assert.equal(mentions.length, 1, `${name} on exactly one line:\n${stderr}`);
      assert.match(mentions[0], new RegExp(`^\\s+${name}: is required`));
    }
    assert.equal(lines.length, 5, stderr);
    assert.equal(run.stdout(), '');
  });

  test('invalid values are each named on their own line', async () => {
    const env = baseEnv({
      EXPERIMENT_ID: 'ok', WORKER_REPO_REMOTE_URL: '/tmp/x', WORKER_AGENT_COMMAND: 'true', WORKER_EVALUATOR_COMMAND: '["unclosed',
      SUPERVISOR_WORKERS: 'many', LOG_LEVEL: 'loud', DATABASE_URL: 'mysql://u:p@h/db', SUPERVISOR_HEARTBEAT_TIMEOUT_MS: '100', SUPERVISOR_HEARTBEAT_INTERVAL_MS: '200',
    });
    const run = spawnSupervisor([], { env, cwd });
    assert.equal((await run.waitExit(20_000)).code, 1);
    const stderr = run.stderr();
    assert.doesNotMatch(stderr, /^\s+at /m);
    for (const name of ['WORKER_EVALUATOR_COMMAND', 'SUPERVISOR_WORKERS', 'LOG_LEVEL', 'DATABASE_URL', 'SUPERVISOR_HEARTBEAT_TIMEOUT_MS']) {
      assert.equal(stderr.split('\n').filter((line) => new RegExp(`^\\s+${name}: `).test(line)).length, 1, `${name}:\n${stderr}`);
    }
    assert.ok(!stderr.includes(':p@'), 'the URL password is not echoed');
  });

  test('--workers abc: exit 1 with a one-line error', async () => {
    const run = spawnSupervisor(['--workers', 'abc'], { env: baseEnv(), cwd });
    assert.equal((await run.waitExit(20_000)).code, 1);
    const stderr = run.stderr();
    assert.doesNotMatch(stderr, /^\s+at /m);
    const lines = stderr.trimEnd().split('\n');
    assert.match(lines[0], /^loreley-supervisor: .*--workers/);
    assert.ok(lines.length <= 2, `one error line (plus a usage hint):\n${stderr}`);
    if (lines.length === 2) assert.match(lines[1], /--help/);
  });

  test('--help and --version work with an empty environment', async () => {
    const help = spawnSupervisor(['--help'], { env: baseEnv(), cwd });
    assert.equal((await help.waitExit(20_000)).code, 0);
    assert.match(help.stdout(), /loreley-supervisor/);
    for (const flag of ['--workers', '--no-scheduler', '--worker-id-prefix', '--drain-timeout', '--exit-when-done', '--max-jobs', '--log-level']) {
      assert.ok(help.stdout().includes(flag.replace('--no-', '--')), `--help mentions ${flag}`);
    }
    const version = spawnSupervisor(['--version'], { env: baseEnv(), cwd });
    assert.equal((await version.waitExit(20_000)).code, 0);
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(version.stdout().trim(), pkg.version);
  });
});

describe('secrets', () => {
  test('the database password and OPENAI_API_KEY never appear in a log file', async () => {
    const fixture = await createFixture({ experimentId: 'secrets', env: { OPENAI_API_KEY: 'sk-test-secret-value', LOG_LEVEL: 'trace' } });
    const password = new URL(fixture.databaseUrl!).password;
    assert.ok(password.length >= 8, 'the test server has a real password');
    const queue = await openQueue(fixture);
    const supervisor = spawnSupervisor(['--workers', '1'], { env: fixture.env, cwd: fixture.root });
    try {
      // One at a time: a job queued while the worker is busy waits for its next poll (see worker.test.ts).
      const until = (id: string) => waitFor(`job ${id} to finish`, async () => ['succeeded', 'failed'].includes((await queue.job(id)).status), 60_000, 100, supervisor);
      const good = await queue.enqueue({});
      await until(good);
      // This agent tries to print both secrets and fails, so whatever it saw reaches the logged error.
      const leaky = await queue.enqueue({ agent: 'leak' });
      await until(leaky);
      assert.equal((await queue.job(good)).status, 'succeeded');
      assert.equal((await queue.job(leaky)).status, 'failed');
      assert.equal(await terminate(supervisor), 0);

      const files = allFiles(fixture.logsDir);
      assert.ok(files.length >= 3, 'supervisor, worker and scheduler logs');
      for (const file of files) {
        const text = readFileSync(file, 'utf8');
        assert.ok(!text.includes(password), `${file} contains the database password`);
        assert.ok(!text.includes('sk-test-secret-value'), `${file} contains OPENAI_API_KEY`);
      }
      const worker = readLog(logDir(fixture, queue.settings, 'worker', 'worker0001'));
      const failed = worker.find((line) => line.jobId === leaky && line.msg === 'job failed');
      assert.ok(failed, 'the failure is logged');
      // Commands run code a model may have written: they are never handed the credentials at all
      // (scrubbing of a secret that does reach a log line is covered by test/shared/logger.test.ts).
      assert.match(String(failed.error), /leaking undefined and undefined/, 'the agent saw neither DATABASE_URL nor OPENAI_API_KEY');
      for (const output of [supervisor.stdout(), supervisor.stderr()]) {
        assert.ok(!output.includes(password) && !output.includes('sk-test-secret-value'), 'the console output is scrubbed too');
      }
    } finally {
      supervisor.killGroup();
      await queue.close();
    }
  });
});

describe('the embedded database (no DATABASE_URL)', () => {
  test('is started under LORELEY_DATA_DIR, runs a job, and is stopped after SIGTERM', async (t) => {
    const fixture = await createFixture({ experimentId: 'embedded', database: false });
    // PostgreSQL runs as the 'postgres' user when we are root: it must be able to reach the data
    // directory (see the next test for a data directory under a private parent).
    chmodSync(fixture.root, 0o755);
    const dataDir = fixture.env.LORELEY_DATA_DIR;
    const started = performance.now();
    const supervisor = spawnSupervisor(['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root });
    let queue: QueueClient | undefined;
    try {
      const settings = fixtureSettings(fixture);
      const directory = path.join(dataDir, 'postgres', settings.experiment.namespace);
      const up = await waitFor('the embedded database', () => supervisorLog(fixture, { settings }).find((line) => line.msg === 'embedded PostgreSQL is up'), 90_000, 100, supervisor);
      t.diagnostic(`embedded PostgreSQL up after ${Math.round(performance.now() - started)} ms (first start: initdb included)`);
      assert.ok(existsSync(path.join(directory, 'data', 'PG_VERSION')), 'the cluster lives under LORELEY_DATA_DIR/postgres/<namespace>');
      assert.ok(processesMentioning(directory).length > 0, 'a postgres server runs from that directory');
      const password = readFileSync(path.join(directory, 'credentials'), 'utf8').trim();
      const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${up.port as number}/postgres`;
      queue = await openQueue(fixture, url);
      await waitFor('worker0001 online', () => readLog(logDir(fixture, settings, 'worker', 'worker0001')).some((line) => line.msg === 'worker online'), 60_000, 100, supervisor);
      const jobId = await queue.enqueue({});
      const job = await waitFor('the job to finish', async () => {
        const current = await queue!.job(jobId);
        return current.status === 'succeeded' || current.status === 'failed' ? current : undefined;
      }, 60_000, 100, supervisor);
      assert.equal(job.status, 'succeeded', job.lastError ?? '');
      await queue.close();
      queue = undefined;

      assert.equal(await terminate(supervisor, 60_000), 0, supervisor.stderr().slice(-2000));
      assert.deepEqual(processesMentioning(directory), [], 'no process is left using the data directory');
      assert.ok(!existsSync(path.join(directory, 'data', 'postmaster.pid')), 'the server shut down cleanly');
      const lines = supervisorLog(fixture, { settings });
      assert.ok(lines.some((line) => line.msg === 'stopping the embedded PostgreSQL'));
      const client = new pg.Client(url);
      client.on('error', () => undefined);
      await assert.rejects(client.connect(), 'the server no longer accepts connections');
    } finally {
      await queue?.close();
      supervisor.killGroup();
    }
  });

  test(
    'starts when LORELEY_DATA_DIR sits under a directory only root can enter (e.g. /root/project/.loreley)',
    async () => {
      if (process.getuid?.() !== 0) return;
      const fixture = await createFixture({ experimentId: 'embedded-private', database: false });
      const privateParent = path.join(fixture.root, 'private');
      mkdirSync(privateParent, { mode: 0o700 });
      const env = { ...fixture.env, LORELEY_DATA_DIR: path.join(privateParent, '.loreley') };
      const supervisor = spawnSupervisor(['--workers', '0', '--no-scheduler'], { env, cwd: fixture.root });
      try {
        const settings = fixtureSettings(fixture);
        await waitFor('the embedded database', () => supervisorLog(fixture, { settings }).some((line) => line.msg === 'embedded PostgreSQL is up'), 90_000, 100, supervisor);
        assert.equal(await terminate(supervisor, 60_000), 0);
      } finally {
        supervisor.killGroup();
        // The cluster was kept outside the private directory; do not leave it behind.
        const location = path.join(privateParent, '.loreley', 'postgres', fixtureSettings(fixture).experiment.namespace, 'cluster-location');
        if (existsSync(location)) rmSync(readFileSync(location, 'utf8').trim(), { recursive: true, force: true });
      }
    },
  );
});

// The shared test server is started lazily; make sure it is up before the first timed test.
await testServer();
