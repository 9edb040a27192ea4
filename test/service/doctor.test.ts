import assert from 'node:assert/strict';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort } from '../../src/shared/embedded-database.ts';
import { startFakeOpenAi, type FakeOpenAi } from '../llm/helpers/fake-openai.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, type Fixture } from '../helpers/experiment.ts';
import { killAllSpawned, spawnLoreley, spawnSupervisor } from '../helpers/processes.ts';

/**
 * `loreley doctor` / `loreley-supervisor --check`, and the supervisor's pre-flight: a broken
 * experiment is refused before anything starts, with exit 78 and one line, never a crash loop.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

async function doctor(fixture: Fixture, env: Record<string, string | undefined> = {}, command: string[] = ['doctor']) {
  const merged: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...fixture.env, ...env })) if (value !== undefined) merged[key] = value;
  const run = (command[0] === 'doctor' ? spawnLoreley : spawnSupervisor)(command[0] === 'doctor' ? command : command, { env: merged, cwd: fixture.root });
  const exit = await run.waitExit(60_000);
  const lines = run.stdout().trimEnd().split('\n');
  const line = (name: string) => lines.find((l) => new RegExp(`^(ok  |FAIL)  ${name} `).test(l));
  return { code: exit.code, stdout: run.stdout(), stderr: run.stderr(), lines, line };
}

describe('loreley doctor', () => {
  let llm: FakeOpenAi;
  after(() => llm?.close());

  test('a good experiment: one ok line per check, exit 0', async () => {
    const fixture = await createFixture({ experimentId: 'doctor-ok' });
    const result = await doctor(fixture);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    for (const name of ['settings', 'database', 'repository', 'agent', 'evaluator', 'log directory', 'disk space']) {
      assert.match(result.line(name) ?? '', /^ok {4}/, `${name}:\n${result.stdout}`);
    }
    assert.match(result.line('database')!, /answers \(PostgreSQL \d+/);
    assert.match(result.line('repository')!, /has branch main/);
    assert.equal(result.stderr, '');
    // The same checks behind loreley-supervisor --check.
    const check = await doctor(fixture, {}, ['--check']);
    assert.equal(check.code, 0, check.stdout);
    assert.deepEqual(check.lines.map((l) => l.slice(0, 20)), result.lines.map((l) => l.slice(0, 20)));
  });

  test('every problem on its own line with its fix, exit 1', async () => {
    const fixture = await createFixture({ experimentId: 'doctor-bad' });
    const notExecutable = path.join(fixture.root, 'evaluate.sh');
    writeFileSync(notExecutable, '#!/bin/sh\necho {}\n');
    chmodSync(notExecutable, 0o644);
    const result = await doctor(fixture, {
      DATABASE_URL: 'postgres://nobody:secret@127.0.0.1:1/none',
      WORKER_REPO_BRANCH: 'trunk',
      WORKER_AGENT_COMMAND: 'no-such-agent-program --flag',
      WORKER_EVALUATOR_COMMAND: notExecutable,
    });
    assert.equal(result.code, 1);
    assert.match(result.line('database')!, /^FAIL +database +DATABASE_URL=postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none cannot be reached: .*ECONNREFUSED.*\(start the server, or fix the URL\)/);
    assert.doesNotMatch(result.stdout, /secret/, 'the password is not printed');
    assert.match(result.line('repository')!, /has no branch trunk: it has main \(set WORKER_REPO_BRANCH\)/);
    assert.match(result.line('agent')!, /WORKER_AGENT_COMMAND: no-such-agent-program is not on PATH \(install it, or give its absolute path\)/);
    assert.match(result.line('evaluator')!, /is not an executable file \(chmod \+x it/);
    assert.match(result.stdout, /4 checks failed\n$/);
  });

  test('invalid settings: each problem on a settings line, nothing else checked', async () => {
    const fixture = await createFixture({ experimentId: 'doctor-settings' });
    const result = await doctor(fixture, { WORKER_EVALUATOR_COMMAND: undefined, LOG_LEVEL: 'loud' });
    assert.equal(result.code, 1);
    assert.ok(result.lines.filter((l) => l.startsWith('FAIL  settings')).length >= 2, result.stdout);
    assert.match(result.stdout, /WORKER_EVALUATOR_COMMAND: is required/);
    assert.equal(result.line('database'), undefined);
  });

  test('with the openai backend: the endpoint answers and has the model, or says which is missing', async () => {
    llm = await startFakeOpenAi([], { models: ['qwen-test', 'other'] });
    const fixture = await createFixture({ experimentId: 'doctor-llm' });
    const env = { WORKER_AGENT_BACKEND: 'openai', OPENAI_BASE_URL: llm.url, WORKER_AGENT_MODELS: 'qwen-test', WORKER_EVOLVE_PATHS: 'prog.txt' };
    const good = await doctor(fixture, env);
    assert.equal(good.code, 0, good.stdout);
    assert.match(good.line('llm endpoint')!, new RegExp(`^ok +llm endpoint +${llm.url} answers and has qwen-test$`));
    assert.equal(good.line('agent'), undefined, 'no agent program with an LLM backend');

    const missing = await doctor(fixture, { ...env, WORKER_AGENT_MODELS: 'qwen-test:3,gpt-9:1' });
    assert.equal(missing.code, 1);
    assert.match(missing.line('llm models')!, /has no model gpt-9 \(it has qwen-test, other\): fix WORKER_AGENT_MODELS/);

    const closed = `http://127.0.0.1:${await freePort()}/v1`;
    const down = await doctor(fixture, { ...env, OPENAI_BASE_URL: closed });
    assert.equal(down.code, 1);
    assert.equal(down.line('llm endpoint'), `FAIL  llm endpoint   OPENAI_BASE_URL=${closed} does not answer: ECONNREFUSED (start the server, or fix the URL)`);
  });
});

describe('the supervisor refuses a configuration that cannot work, before starting anything', () => {
  const refused = async (fixture: Fixture, env: Record<string, string>, args: string[] = ['--workers', '1']) => {
    const started = performance.now();
    const run = spawnSupervisor(args, { env: { ...fixture.env, ...env }, cwd: fixture.root });
    const exit = await run.waitExit(30_000);
    return { code: exit.code, stderr: run.stderr(), ms: performance.now() - started };
  };

  test('a repository that does not exist: exit 78 at once, one line naming the setting', async (t) => {
    const fixture = await createFixture({ experimentId: 'preflight-remote' });
    const result = await refused(fixture, { WORKER_REPO_REMOTE_URL: path.join(fixture.root, 'missing.git') });
    t.diagnostic(`refused in ${Math.round(result.ms)} ms`);
    assert.equal(result.code, 78);
    assert.equal(result.stderr.trimEnd().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, /^loreley-supervisor: repository: WORKER_REPO_REMOTE_URL=.*missing\.git cannot be read: /);
    assert.ok(result.ms < 10_000, 'no crash loop: refused within seconds');
  });

  test('a branch that does not exist, and a missing evaluator: one line each, exit 78', async () => {
    const fixture = await createFixture({ experimentId: 'preflight-branch' });
    rmSync(path.join(fixture.root, 'evaluator.mjs'));
    const result = await refused(fixture, { WORKER_REPO_BRANCH: 'nope' });
    assert.equal(result.code, 78);
    const lines = result.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 2, result.stderr);
    assert.match(lines[0], /^loreley-supervisor: repository: .* has no branch nope/);
    assert.match(lines[1], /^loreley-supervisor: evaluator: WORKER_EVALUATOR_COMMAND: .*evaluator\.mjs does not exist/);
  });

  test('--workers 0 with the embedded database: refused with the reason, naming the flag', async () => {
    const fixture = await createFixture({ experimentId: 'preflight-zero', database: false });
    const result = await refused(fixture, {}, ['--workers', '0']);
    assert.equal(result.code, 78);
    assert.match(result.stderr, /^loreley-supervisor: --workers: must be at least 1 with the embedded database \(no DATABASE_URL\): the run could never finish/);
    assert.equal(result.stderr.trimEnd().split('\n').length, 1);
  });

  test('a bad flag value names the flag', async () => {
    const fixture = await createFixture({ experimentId: 'preflight-flag' });
    for (const [flag, value] of [['--workers', '-1'], ['--drain-timeout', 'soon'], ['--max-jobs', '1.5']]) {
      const result = await refused(fixture, {}, [flag, value]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, new RegExp(`^loreley-supervisor: ${flag}: must be `), result.stderr);
    }
  });
});
