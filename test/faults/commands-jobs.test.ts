import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { getArtifacts } from '../../src/shared/db/results.ts';
import { EXIT_CONFIG } from '../../src/shared/ipc.ts';
import { urlPasswords } from '../../src/shared/logger.ts';
import { detectContainment } from '../../src/shared/sandbox.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, openQueue, startWorker, stopEverything, type Fixture, type QueueClient } from '../helpers/experiment.ts';
import { allFiles, NODE, processesMentioning, waitFor, type Spawned } from '../helpers/processes.ts';
import { assertAudit } from './audit.ts';
import { auditFixture } from './helpers.ts';

/**
 * Hostile agents and evaluators run by a real worker against a real database and git remote, in the
 * bubblewrap sandbox (the default where it works) and without any sandbox (WORKER_SANDBOX=none,
 * process group only: the weakest fallback). Each case ends with the audit: the job reached a
 * terminal state exactly once within about its timeout, no process carrying the case's marker is
 * left, no worktree is left, no hook or planted git config ran, and no secret is in any stored row
 * or log line.
 */

const API_KEY = 'sk-loreley-fault-test-0123456789abcdef';
const EVALUATOR_TIMEOUT_SECONDS = 2;

/** Every process a case starts carries `sleep 600.<n>` in its command line. */
let markerCounter = Math.floor(Math.random() * 1e6);
const marker = () => `600.${process.pid}${(markerCounter += 1)}`;

const AGENT = `
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
const [records, evaluator] = process.argv.slice(2);
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const mode = context.payload.agent ?? 'edit';
const tried = {};
const attempt = (name, fn) => { try { fn(); tried[name] = 'done'; } catch (error) { tried[name] = 'refused: ' + (error.code ?? error.message); } };
if (mode === 'daemon') {
  // A process in a session of its own, then a long think: the worker is killed meanwhile.
  spawn('setsid', ['sleep', context.payload.marker], { stdio: 'ignore', detached: true }).unref();
  writeFileSync(records + '/' + context.jobId + '.agent.json', JSON.stringify({ mode, pid: process.pid }));
  await new Promise((resolve) => setTimeout(resolve, 60000));
}
if (mode === 'hostile') {
  const evil = records + '/evil.sh';
  const common = execFileSync('git', ['rev-parse', '--path-format=absolute', '--git-common-dir'], { encoding: 'utf8' }).trim();
  const hook = (name) => '#!/bin/sh\\necho ran >> ' + records + '/ran-hook-' + name + '\\nenv >> ' + records + '/ran-hook-env\\n';
  for (const name of ['post-commit', 'pre-push', 'post-checkout', 'pre-commit', 'reference-transaction']) {
    attempt('hook ' + name, () => { writeFileSync(common + '/hooks/' + name, hook(name)); chmodSync(common + '/hooks/' + name, 0o755); });
  }
  mkdirSync('evil-hooks', { recursive: true });
  for (const name of ['post-commit', 'pre-push', 'post-checkout']) { writeFileSync('evil-hooks/' + name, hook('path-' + name)); chmodSync('evil-hooks/' + name, 0o755); }
  const planted = '[core]\\n\\thooksPath = ' + process.cwd() + '/evil-hooks\\n\\tfsmonitor = ' + evil + '\\n\\tsshCommand = ' + evil + '\\n'
    + '[credential]\\n\\thelper = !' + evil + '\\n[filter "evil"]\\n\\tclean = ' + evil + '\\n\\tsmudge = ' + evil + '\\n'
    + '[remote "origin"]\\n\\treceivepack = ' + evil + '\\n\\tuploadpack = ' + evil + '\\n[diff]\\n\\texternal = ' + evil + '\\n';
  attempt('shared config', () => appendFileSync(common + '/config', planted));
  attempt('attributes', () => writeFileSync('.gitattributes', '* filter=evil diff=evil\\n'));
  // Point the worktree's .git file at a repository of its own with the same config.
  attempt('git file', () => {
    execFileSync('git', ['init', '--quiet', '--bare', 'evil.git'], { env: { PATH: process.env.PATH } });
    appendFileSync('evil.git/config', planted);
    writeFileSync('.git', 'gitdir: ' + process.cwd() + '/evil.git\\n');
  });
  attempt('evaluator', () => appendFileSync(evaluator, '\\n// tampered by the agent\\n'));
  let environs = '';
  for (const pid of ['self', String(process.ppid), ...readdirSync('/proc').filter((name) => /^\\d+$/.test(name))]) {
    try { environs += readFileSync('/proc/' + pid + '/environ', 'utf8').split('\\0').join(' ') + '\\n'; } catch {}
  }
  console.log('ENVIRONS ' + environs);
  console.log('TRIED ' + JSON.stringify(tried));
}
writeFileSync(records + '/' + context.jobId + '.agent.json', JSON.stringify({ mode, tried, ppid: process.ppid }));
appendFileSync('prog.txt', 'y = ' + JSON.stringify(context.jobId) + '\\n');
console.log(JSON.stringify({ summary: 'agent edit for ' + context.jobId }));
`;

const EVALUATOR = `
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
const [records, dotenv] = process.argv.slice(2);
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const mode = context.payload.evaluator ?? 'ok';
const sleepMarker = context.payload.marker;
writeFileSync(records + '/' + context.jobId + '.evaluator.json', JSON.stringify({ mode, pid: process.pid, ppid: process.ppid }));
const ok = (summary = 'ok') => console.log(JSON.stringify({ summary, metrics: [{ name: 'score', value: 1 }] }));
switch (mode) {
  case 'ok':
    ok();
    break;
  case 'term-setsid':
    // Ignores SIGTERM, and leaves a process in a session of its own holding stdout.
    process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
    spawn('setsid', ['sleep', sleepMarker], { stdio: ['ignore', 'inherit', 'inherit'], detached: true }).unref();
    console.log('judging forever');
    setInterval(() => undefined, 1000);
    break;
  case 'flood': {
    console.log('FIRST-LINE');
    const chunk = Buffer.alloc(1 << 20, 'x');
    for (let i = 0; i < 200; i += 1) if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
    console.log('\\nLAST-LINE');
    ok();
    break;
  }
  case 'nul-name':
    console.log(JSON.stringify({ metrics: [{ name: 'sc\\u0000ore', value: 1 }] }));
    break;
  case 'nul-output':
    process.stdout.write('noise \\u0000\\u0000 bytes\\n');
    console.error('stderr \\u0000 too');
    console.log(JSON.stringify({ summary: 'sum\\u0000mary \\ud800', metrics: [{ name: 'score', value: 1, unit: 'pts' }] }));
    break;
  case 'leak': {
    let dump = 'ENV ' + JSON.stringify(process.env) + '\\n';
    for (const pid of [String(process.ppid), ...readdirSync('/proc').filter((name) => /^\\d+$/.test(name))]) {
      try { dump += 'PROC ' + pid + ' ' + readFileSync('/proc/' + pid + '/environ', 'utf8').split('\\0').join(' ') + '\\n'; } catch {}
    }
    try { dump += 'DOTENV ' + readFileSync(dotenv, 'utf8'); } catch (error) { dump += 'DOTENV unreadable ' + error.code; }
    if (context.payload.tamper) {
      try { appendFileSync(process.argv[1], '\\n// tampered by the evaluator\\n'); dump += 'TAMPER done\\n'; } catch (error) { dump += 'TAMPER refused ' + error.code + '\\n'; }
    }
    console.log(dump);
    console.error(dump);
    ok(dump.slice(0, 4000));
    break;
  }
  case 'tamper':
    appendFileSync(process.argv[1], '\\n// tampered by the evaluator\\n');
    ok('tampered');
    break;
}
`;

interface Case {
  readonly fixture: Fixture;
  readonly queue: QueueClient;
  readonly worker: Spawned;
  readonly evaluator: string;
  readonly secrets: readonly string[];
}

const cleanups: Array<() => Promise<void>> = [];
const markers: string[] = [];

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  for (const needle of markers) for (const { pid } of processesMentioning(`sleep ${needle}`)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
  await stopTestServer();
});

async function startCase(name: string, env: Record<string, string>): Promise<Case> {
  const fixture = await createFixture({
    experimentId: `commands-${name}`,
    env: { WORKER_EVALUATOR_TIMEOUT_SECONDS: String(EVALUATOR_TIMEOUT_SECONDS), TASKS_WORKER_MAX_RETRIES: '0', ...env },
  });
  const agent = path.join(fixture.root, 'hostile-agent.mjs');
  const evaluator = path.join(fixture.root, 'hostile-evaluator.mjs');
  const dotenv = path.join(fixture.root, '.env');
  writeFileSync(agent, AGENT);
  writeFileSync(evaluator, EVALUATOR);
  // The worker reads this .env (its settings), so the key is one of the secrets it knows.
  writeFileSync(dotenv, `OPENAI_API_KEY=${API_KEY}\n`);
  Object.assign(fixture.env, {
    WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, fixture.recordsDir, evaluator]),
    WORKER_EVALUATOR_COMMAND: JSON.stringify([NODE, evaluator, fixture.recordsDir, dotenv]),
    WORKER_SANDBOX_WRITABLE: fixture.recordsDir,
  });
  const queue = await openQueue(fixture);
  const worker = await startWorker(fixture, queue);
  cleanups.push(async () => {
    // A worker a case SIGKILLed has no exit code, only a signal: nothing to stop.
    await stopEverything(worker.child.signalCode === null ? worker : undefined);
    await queue.close();
  });
  return { fixture, queue, worker, evaluator, secrets: [...urlPasswords(fixture.databaseUrl), API_KEY] };
}

/** Waits for a terminal state; returns the job and how long it ran. */
async function finished(c: Case, jobId: string, timeoutMs = 60_000) {
  const job = await waitFor(`job ${jobId} to finish`, async () => {
    const row = await c.queue.job(jobId);
    return row.status === 'succeeded' || row.status === 'failed' ? row : undefined;
  }, timeoutMs, 50);
  const { rows } = await c.queue.pool.query<{ ms: number }>(
    `SELECT EXTRACT(EPOCH FROM (finished_at - started_at)) * 1000 AS ms FROM evolution_jobs WHERE id = $1`, [jobId]);
  return { job, ms: Number(rows[0].ms) };
}

/** The audit every case ends with. */
async function audit(c: Case, jobIds: readonly string[], caseMarkers: readonly string[] = []): Promise<void> {
  const { pool, settings } = c.queue;
  // Each job is terminal exactly once, in our table and in the queue.
  for (const jobId of jobIds) {
    const job = await c.queue.job(jobId);
    assert.ok(job.status === 'succeeded' || job.status === 'failed', `job ${jobId} is ${job.status}`);
    assert.equal(job.attempts, 1, `job ${jobId} ran once`);
    const queueJobs = (await c.queue.queueJobs()).filter((q) => q.data.jobId === jobId);
    assert.equal(queueJobs.length, 1, `one queue job for ${jobId}`);
    // pg-boss records the end a moment after our row (the handler returns or throws after storing).
    await waitFor(`the queue job of ${jobId} to end`, async () => {
      const [queueJob] = (await c.queue.queueJobs()).filter((q) => q.data.jobId === jobId);
      return ['completed', 'failed'].includes(queueJob.state);
    }, 10_000);
  }
  // No process left.
  for (const needle of caseMarkers) {
    await waitFor(`no process carrying sleep ${needle}`, () => processesMentioning(`sleep ${needle}`).length === 0, 5000);
  }
  // No worktree left (the worker removes each job's worktree in its finally).
  const worktrees = `${c.fixture.worktree}-worktrees`;
  await waitFor('every job worktree removed', () => !existsSync(worktrees) || readdirSync(worktrees).filter((name) => jobIds.some((id) => name.startsWith(id))).length === 0, 10_000);
  // No hook, fsmonitor, filter or planted command ever ran.
  const ran = readdirSync(c.fixture.recordsDir).filter((name) => name.startsWith('ran-') || name.startsWith('evil-ran'));
  assert.deepEqual(ran, [], 'no hook or planted git command ran');
  // No secret in any stored row or log line.
  const { rows } = await pool.query<{ text: string }>(
    `SELECT content AS text FROM ${settings.database.schema}.job_artifacts
     UNION ALL SELECT coalesce(message, '') || ' ' || coalesce(summary, '') FROM ${settings.database.schema}.commit_cards
     UNION ALL SELECT coalesce(last_error, '') FROM ${settings.database.schema}.evolution_jobs
     UNION ALL SELECT name || ' ' || coalesce(unit, '') FROM ${settings.database.schema}.metrics
     UNION ALL SELECT coalesce(output::text, '') FROM ${settings.database.bossSchema}.job`,
  );
  const logs = allFiles(c.fixture.logsDir).filter((file) => file.endsWith('.jsonl')).map((file) => readFileSync(file, 'utf8'));
  for (const secret of c.secrets) {
    assert.ok(secret.length >= 8, 'the secret is a real one');
    assert.ok(!rows.some((row) => row.text.includes(secret)), `a stored row holds the secret ${secret.slice(0, 4)}…`);
    assert.ok(!logs.some((text) => text.includes(secret)), `a log line holds the secret ${secret.slice(0, 4)}…`);
  }
  // And the audit every fault test shares (the books balance, nothing left behind, no secret).
  const alive = c.worker.child.exitCode === null && c.worker.child.signalCode === null;
  assertAudit(await auditFixture(c.fixture, c.queue, { secrets: [API_KEY], ignorePids: alive ? [c.worker.pid] : [] }));
}

const bubblewrap = (() => {
  try {
    detectContainment({ mode: 'namespace', required: true, network: false, writable: [], containment: 'auto' });
    return undefined;
  } catch (error) {
    return `bubblewrap is not available here (${(error as Error).message}): the sandboxed cases are skipped`;
  }
})();

describe('in the bubblewrap sandbox (the default)', { skip: bubblewrap ?? false }, () => {
  let c: Case;

  test('start a worker with the default settings', async () => {
    c = await startCase('sandbox', { WORKER_SANDBOX: '', WORKER_CONTAINMENT: '' });
  });

  test('an evaluator that ignores SIGTERM and leaves a setsid child holding stdout ends within its timeout', async () => {
    const sleepMarker = marker();
    markers.push(sleepMarker);
    const jobId = await c.queue.enqueue({ evaluator: 'term-setsid', marker: sleepMarker });
    const { job, ms } = await finished(c, jobId);
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', new RegExp(`^evaluator ".*" timed out after ${EVALUATOR_TIMEOUT_SECONDS}s$`));
    // The evaluator alone may take its timeout; agent, git and bookkeeping fit in a few seconds.
    assert.ok(ms < EVALUATOR_TIMEOUT_SECONDS * 1000 + 6000, `the job ran ${Math.round(ms)} ms`);
    await audit(c, [jobId], [sleepMarker]);
  });

  test('an evaluator that prints 200 MB fails the job with "output over 16 MiB", its first and last part kept', async () => {
    const jobId = await c.queue.enqueue({ evaluator: 'flood' });
    const { job } = await finished(c, jobId);
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', /^evaluator ".*" output over 16 MiB \(\d+ bytes read before it was stopped/);
    assert.doesNotMatch(job.lastError ?? '', /SIGPIPE/);
    const artifacts = await getArtifacts(c.queue.pool, jobId);
    assert.match(artifacts.evaluator_output, /^FIRST-LINE\n/);
    assert.match(artifacts.evaluator_output, /omitted/);
    assert.ok(artifacts.evaluator_output.length <= 70 * 1024);
    await audit(c, [jobId]);
  });

  test('NUL bytes: in a metric name a precise error, in output and summary stored as ␀', async () => {
    const badName = await c.queue.enqueue({ evaluator: 'nul-name' });
    const nulOutput = await c.queue.enqueue({ evaluator: 'nul-output' });
    const bad = await finished(c, badName);
    assert.equal(bad.job.status, 'failed');
    assert.match(bad.job.lastError ?? '', /output is invalid: metric name "sc\\u0000ore" has U\+0000 at position 3: names may use letters, digits/);
    const good = await finished(c, nulOutput);
    assert.equal(good.job.status, 'succeeded', good.job.lastError ?? '');
    const { rows } = await c.queue.pool.query<{ summary: string }>('SELECT summary FROM commit_cards WHERE job_id = $1', [nulOutput]);
    assert.equal(rows[0].summary, 'sum␀mary \uFFFD');
    const artifacts = await getArtifacts(c.queue.pool, nulOutput);
    assert.match(artifacts.evaluator_output, /noise ␀␀ bytes/);
    assert.match(artifacts.evaluator_output, /stderr ␀ too/);
    await audit(c, [badName, nulOutput]);
  });

  test('a hostile agent can write no hook, no git config and not the evaluator; sees no other process; its job succeeds untouched', async () => {
    const before = readFileSync(c.evaluator, 'utf8');
    const jobId = await c.queue.enqueue({ agent: 'hostile' });
    const { job } = await finished(c, jobId);
    assert.equal(job.status, 'succeeded', job.lastError ?? '');
    const record = JSON.parse(readFileSync(path.join(c.fixture.recordsDir, `${jobId}.agent.json`), 'utf8')) as { tried: Record<string, string> };
    for (const name of ['hook post-commit', 'hook pre-push', 'hook post-checkout', 'shared config', 'evaluator']) {
      assert.match(record.tried[name], /^refused: EROFS/, `${name}: ${record.tried[name]}`);
    }
    assert.equal(record.tried['git file'], 'done', 'the worktree is the agent\'s: it may rewrite .git there');
    assert.equal(readFileSync(c.evaluator, 'utf8'), before);
    assert.doesNotMatch(readFileSync(path.join(c.fixture.worktree, '.git', 'config'), 'utf8'), /evil/);
    // The commit went into the real repository (pushed), not into the agent's evil.git.
    assert.ok(job.resultCommit);
    await audit(c, [jobId]);
  });

  test('an evaluator that dumps its environment, every /proc/*/environ and the .env, and rewrites itself, stores no secret and changes nothing', async () => {
    const before = readFileSync(c.evaluator, 'utf8');
    const jobId = await c.queue.enqueue({ evaluator: 'leak', tamper: true });
    const { job } = await finished(c, jobId);
    assert.equal(job.status, 'succeeded', job.lastError ?? '');
    const artifacts = await getArtifacts(c.queue.pool, jobId);
    assert.match(artifacts.evaluator_output, /DOTENV \n|DOTENV unreadable/, 'the .env is hidden in the sandbox');
    assert.match(artifacts.evaluator_output, /TAMPER refused EROFS/);
    assert.equal(readFileSync(c.evaluator, 'utf8'), before);
    // The worker goes on: the next evaluation finds its judge unchanged.
    const next = await c.queue.enqueue({});
    assert.equal((await finished(c, next)).job.status, 'succeeded');
    await audit(c, [jobId, next]);
  });
});

describe('a SIGKILLed worker in the bubblewrap sandbox', { skip: bubblewrap ?? false }, () => {
  test('takes its agent and the agent\'s setsid child with it, with no supervisor to help (--die-with-parent)', async () => {
    const c = await startCase('sandbox-kill', { WORKER_SANDBOX: '', WORKER_CONTAINMENT: '' });
    const sleepMarker = marker();
    markers.push(sleepMarker);
    const jobId = await c.queue.enqueue({ agent: 'daemon', marker: sleepMarker });
    await waitFor('the agent and its setsid child to run', () => existsSync(path.join(c.fixture.recordsDir, `${jobId}.agent.json`)) && processesMentioning(`sleep ${sleepMarker}`).length > 0, 30_000, 50, c.worker);
    process.kill(c.worker.pid, 'SIGKILL');
    await waitFor(`the setsid child (sleep ${sleepMarker}) to die with the killed worker`, () => processesMentioning(`sleep ${sleepMarker}`).length === 0, 5000);
    await waitFor('no process left under the run\'s directory', () => processesMentioning(c.fixture.root).length === 0, 5000);
  });
});

describe('without a sandbox, process group only (WORKER_SANDBOX=none, WORKER_CONTAINMENT=process-group)', () => {
  let c: Case;

  test('start a worker', async () => {
    c = await startCase('nosandbox', { WORKER_SANDBOX: 'none', WORKER_CONTAINMENT: 'process-group' });
  });

  test('an evaluator that ignores SIGTERM and leaves a setsid child holding stdout still ends within its timeout', async () => {
    const sleepMarker = marker();
    markers.push(sleepMarker);
    const jobId = await c.queue.enqueue({ evaluator: 'term-setsid', marker: sleepMarker });
    const { job, ms } = await finished(c, jobId);
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', /timed out after 2s$/);
    assert.ok(ms < EVALUATOR_TIMEOUT_SECONDS * 1000 + 6000, `the job ran ${Math.round(ms)} ms`);
    // The one thing this fallback cannot do (the start-up warning says so): the setsid child lives.
    assert.equal(processesMentioning(`sleep ${sleepMarker}`).length, 1);
    for (const { pid } of processesMentioning(`sleep ${sleepMarker}`)) process.kill(pid, 'SIGKILL');
    await audit(c, [jobId], [sleepMarker]);
  });

  test('an evaluator that reads the worker\'s /proc/<pid>/environ stores no secret (redacted)', async () => {
    const jobId = await c.queue.enqueue({ evaluator: 'leak' });
    const { job } = await finished(c, jobId);
    assert.equal(job.status, 'succeeded', `${job.lastError}\n${(await getArtifacts(c.queue.pool, jobId)).evaluator_output?.slice(0, 3000)}`);
    const artifacts = await getArtifacts(c.queue.pool, jobId);
    assert.match(artifacts.evaluator_output, /\[redacted\]/, 'it did find secrets, and they were redacted');
    await audit(c, [jobId]);
  });

  test('a hostile agent: its hooks never run, its planted git config is undone (the job fails saying so), and its rewrite of the evaluator stops the worker with exit 78 before the next evaluation', async () => {
    const jobId = await c.queue.enqueue({ agent: 'hostile' });
    const { job } = await finished(c, jobId);
    const record = JSON.parse(readFileSync(path.join(c.fixture.recordsDir, `${jobId}.agent.json`), 'utf8')) as { tried: Record<string, string> };
    assert.equal(record.tried['hook post-commit'], 'done', 'without a sandbox the agent can write the hooks');
    assert.equal(record.tried['shared config'], 'done');
    assert.equal(record.tried.evaluator, 'done');
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', /git add refused: .*config was changed while jobs ran \(by a candidate\?\); Loreley's copy is restored/);
    assert.doesNotMatch(readFileSync(path.join(c.fixture.worktree, '.git', 'config'), 'utf8'), /evil/);
    // The next job's commit runs with hooks disabled and Loreley's config; its evaluation is refused.
    const next = await c.queue.enqueue({});
    const nextJob = (await finished(c, next)).job;
    assert.equal(nextJob.status, 'failed');
    assert.match(nextJob.lastError ?? '', /the evaluator's files changed since the worker started \(.*hostile-evaluator\.mjs\)/);
    const exit = await c.worker.waitExit(20_000);
    assert.equal(exit.code, EXIT_CONFIG);
    await audit(c, [jobId, next]);
  });
});
