import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  bestBranchName,
  defaultQueueName,
  EXPERIMENT_ID_NAMESPACE,
  jobBranchName,
  NAMESPACE_DNS,
  resolveExperiment,
  slugify,
  uuid5,
} from '../../src/shared/experiment.ts';
import { loadSettings, mergedEnv, parseArgv, SettingsError, type Env } from '../../src/shared/settings/index.ts';
import { parseSize } from '../../src/shared/settings/reader.ts';
import { tempDir } from '../helpers/git.ts';

/** Settings and experiment identity: pure functions, no processes. */

const cwd = tempDir('loreley-settings-');
const VALID: Env = {
  EXPERIMENT_ID: 'circle-packing',
  WORKER_REPO_REMOTE_URL: 'https://example.com/repo.git',
  WORKER_AGENT_COMMAND: 'my-agent --fast',
  WORKER_EVALUATOR_COMMAND: '["python3", "evaluate.py"]',
};

function load(env: Env, overrides: Env = {}) {
  return loadSettings({ env, overrides, cwd, dotenv: false });
}

function problems(env: Env): readonly string[] {
  try {
    load(env);
  } catch (error) {
    assert.ok(error instanceof SettingsError, `a SettingsError, got ${String(error)}`);
    return error.problems;
  }
  assert.fail('expected the settings to be rejected');
}

describe('experiment identity', () => {
  test('uuid5 matches Python (uuid.uuid5(uuid.NAMESPACE_DNS, "python.org"))', () => {
    assert.equal(uuid5(NAMESPACE_DNS, 'python.org'), '886313e1-3b8a-5372-9b90-0c9aee199e5d');
    assert.equal(EXPERIMENT_ID_NAMESPACE, uuid5(NAMESPACE_DNS, 'ace.loreley.experiment_id'));
  });

  test('a slug maps to the original UUID and namespace', () => {
    const experiment = resolveExperiment('circle-packing');
    assert.equal(experiment.uuid, 'a7780c9d-e6b3-5a91-9fbb-e67ec4c38ed8');
    assert.equal(experiment.namespace, 'circle-packing-a7780c9d');
    assert.equal(experiment.raw, 'circle-packing');
    assert.ok(Object.isFrozen(experiment));
  });

  test('the UUID comes from the raw value, the namespace from its slug', () => {
    const experiment = resolveExperiment('  Circle Packing!  ');
    assert.equal(experiment.raw, 'Circle Packing!');
    assert.equal(experiment.uuid, uuid5(EXPERIMENT_ID_NAMESPACE, 'Circle Packing!'));
    assert.equal(experiment.namespace, `circle-packing-${experiment.uuid.slice(0, 8)}`);
    assert.notEqual(experiment.uuid, resolveExperiment('circle-packing').uuid);
  });

  test("a UUID's namespace is its 32-hex form, whatever its case or dashes", () => {
    const id = 'A7780C9D-E6B3-5A91-9FBB-E67EC4C38ED8';
    for (const raw of [id, id.toLowerCase(), id.replace(/-/g, '')]) {
      const experiment = resolveExperiment(raw);
      assert.equal(experiment.uuid, 'a7780c9d-e6b3-5a91-9fbb-e67ec4c38ed8');
      assert.equal(experiment.namespace, 'a7780c9de6b35a919fbbe67ec4c38ed8');
    }
  });

  test('slugify: runs outside [A-Za-z0-9._-] become -, dashes collapse, trimmed, lower case', () => {
    assert.equal(slugify('Circle Packing'), 'circle-packing');
    assert.equal(slugify('a  b!!c'), 'a-b-c');
    assert.equal(slugify('--edge--case--'), 'edge-case');
    assert.equal(slugify('keep.dots_and-dashes'), 'keep.dots_and-dashes');
    assert.equal(slugify('a - b'), 'a-b');
    assert.equal(slugify('Ünïcode/päth'), 'n-code-p-th');
    assert.equal(slugify('MiXeD'), 'mixed');
    assert.equal(slugify('!!!'), '');
  });

  test('an empty or unusable EXPERIMENT_ID is an error', () => {
    assert.throws(() => resolveExperiment('   '), /EXPERIMENT_ID is empty/);
    assert.throws(() => resolveExperiment('!!!'), /no usable characters/);
  });

  test('queue and branch names', () => {
    const experiment = resolveExperiment('circle-packing');
    assert.equal(defaultQueueName(experiment), 'loreley.evolution.circle-packing-a7780c9d');
    const job = '0b6e2c8a-1111-4222-8333-944455556666';
    assert.equal(jobBranchName(experiment, job), `evolution/job/circle-packing-a7780c9d/${job}`);
    assert.equal(bestBranchName(experiment), 'evolution/best/circle-packing-a7780c9d');
    const settings = load(VALID);
    assert.equal(settings.queue.name, 'loreley.evolution.circle-packing-a7780c9d');
    assert.equal(settings.queue.deadLetterName, 'loreley.evolution.circle-packing-a7780c9d.dead');
    const custom = load({ ...VALID, TASKS_QUEUE_NAME: 'my.queue' });
    assert.equal(custom.queue.name, 'my.queue');
    assert.equal(custom.queue.deadLetterName, 'my.queue.dead');
  });
});

describe('loading settings', () => {
  test('defaults', () => {
    const settings = load(VALID);
    assert.ok(Object.isFrozen(settings) && Object.isFrozen(settings.repository) && Object.isFrozen(settings.worker.git), 'frozen deeply');
    assert.equal(settings.experiment.namespace, 'circle-packing-a7780c9d');
    assert.equal(settings.database.url, undefined, 'no DATABASE_URL means the embedded database');
    assert.equal(settings.database.schema, 'loreley');
    assert.equal(settings.database.bossSchema, 'pgboss');
    assert.equal(settings.dataDir, path.join(cwd, '.loreley'));
    assert.equal(settings.logs.baseDir, cwd);
    assert.equal(settings.logs.level, 'info');
    assert.equal(settings.logs.rotateBytes, 10 * 1024 * 1024);
    assert.equal(settings.logs.retentionDays, 14);
    assert.equal(settings.queue.maxRetries, 0);
    assert.equal(settings.queue.timeLimitSeconds, 3600);
    assert.equal(settings.repository.branch, 'main');
    assert.equal(settings.worker.git.baseClone, path.join(cwd, '.loreley', 'repos', 'circle-packing-a7780c9d'));
    assert.deepEqual(settings.agent.command, ['my-agent', '--fast']);
    assert.deepEqual(settings.worker.evaluator.command, ['python3', 'evaluate.py']);
    assert.equal(settings.supervisor.workers, 2);
    assert.equal(settings.supervisor.scheduler, true);
    assert.equal(settings.supervisor.workerIdPrefix, 'worker');
    assert.equal(settings.supervisor.drainTimeoutSeconds, 60);
  });

  test("the experiment's repository is one section both roles read: remote, branch, root commit, push", () => {
    const settings = load({ ...VALID, WORKER_REPO_BRANCH: 'trunk', MAPELITES_EXPERIMENT_ROOT_COMMIT: 'v1.0', WORKER_REPO_PUSH: 'false', WORKER_REPO_WORKTREE: 'clones/base' });
    assert.deepEqual(settings.repository, { remoteUrl: VALID.WORKER_REPO_REMOTE_URL, branch: 'trunk', rootCommit: 'v1.0', push: false });
    assert.equal(load(VALID).repository.rootCommit, undefined, 'the branch tip by default');
    assert.equal(load(VALID).repository.push, true);
    assert.equal(settings.worker.git.baseClone, path.join(cwd, 'clones', 'base'), 'WORKER_REPO_WORKTREE names the base clone');
  });

  test('relative paths resolve against the working directory; URLs are kept', () => {
    const settings = load({ ...VALID, WORKER_REPO_REMOTE_URL: '../remote.git', LOGS_BASE_DIR: 'out', LORELEY_DATA_DIR: 'state' });
    assert.equal(settings.repository.remoteUrl, path.resolve(cwd, '../remote.git'));
    assert.equal(settings.logs.baseDir, path.join(cwd, 'out'));
    assert.equal(settings.dataDir, path.join(cwd, 'state'));
    assert.equal(load({ ...VALID, WORKER_REPO_REMOTE_URL: 'git@github.com:o/r.git' }).repository.remoteUrl, 'git@github.com:o/r.git');
    assert.equal(load({ ...VALID, WORKER_REPO_REMOTE_URL: 'ssh://h/r.git' }).repository.remoteUrl, 'ssh://h/r.git');
  });

  const INVALID: Array<[string, string, RegExp]> = [
    ['EXPERIMENT_ID', '!!!', /no usable characters/],
    ['DATABASE_URL', 'mysql://u:p@h/db', /postgres:\/\//],
    ['DATABASE_URL', 'not a url', /not a valid URL/],
    ['DATABASE_SCHEMA', 'Bad-Schema', /SQL identifier/],
    ['PGBOSS_SCHEMA', '1boss', /SQL identifier/],
    ['DATABASE_POOL_MAX', '0', />= 1/],
    ['LOG_LEVEL', 'loud', /one of trace, debug, info, warn, error, fatal/],
    ['LOG_ROTATE_SIZE', 'huge', /size of at least 1k/],
    ['LOG_ROTATE_SIZE', '100', /size of at least 1k/],
    ['LOG_RETENTION_DAYS', '-1', />= 0/],
    ['LOG_CONSOLE', 'maybe', /true or false/],
    ['TASKS_WORKER_MAX_RETRIES', '-1', />= 0/],
    ['TASKS_WORKER_TIME_LIMIT_SECONDS', '0', />= 1/],
    ['TASKS_WORKER_HEARTBEAT_SECONDS', '5', />= 10/],
    ['TASKS_POLLING_INTERVAL_SECONDS', '0.1', />= 0.5/],
    ['TASKS_WORKER_RETRY_BACKOFF', 'sometimes', /true or false/],
    ['WORKER_REPO_PUSH', 'perhaps', /true or false/],
    ['WORKER_EVALUATOR_COMMAND', '["python3", 1]', /JSON array of strings/],
    ['WORKER_EVALUATOR_COMMAND', '"unclosed', /unclosed quote/],
    ['WORKER_EVALUATOR_TIMEOUT_SECONDS', '1.5', /integer/],
    ['WORKER_CONCURRENCY', '0', />= 1/],
    ['WORKER_COMMAND_LAUNCHER', 'maybe', /true or false/],
    ['WORKER_AGENT_BACKEND', 'llm', /one of command/],
    ['WORKER_AGENT_COMMAND', '[', /not valid JSON/],
    ['WORKER_AGENT_TIMEOUT_SECONDS', 'abc', /integer/],
    ['SUPERVISOR_WORKERS', 'many', /integer/],
    ['SUPERVISOR_WORKERS', '-1', />= 0/],
    ['SUPERVISOR_WORKER_ID_PREFIX', '1host', /start with a letter/],
    ['SUPERVISOR_DRAIN_TIMEOUT_SECONDS', '-5', />= 0/],
    ['SUPERVISOR_SCHEDULER', 'maybe', /true or false/],
    ['SUPERVISOR_CRASH_LOOP_WINDOW_SECONDS', '0', />= 1/],
    ['SUPERVISOR_HEARTBEAT_INTERVAL_MS', '10', />= 50/],
  ];
  for (const [name, value, message] of INVALID) {
    test(`invalid ${name}=${JSON.stringify(value)} is reported`, () => {
      const found = problems({ ...VALID, [name]: value });
      assert.equal(found.length, 1, found.join('\n'));
      assert.ok(found[0].startsWith(`${name}: `), found[0]);
      assert.match(found[0], message);
      assert.ok(!found[0].includes('\n'), 'one line');
    });
  }

  test('cross-field rules', () => {
    assert.match(problems({ ...VALID, SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '5000', SUPERVISOR_RESTART_BACKOFF_MAX_MS: '1000' })[0], /^SUPERVISOR_RESTART_BACKOFF_MAX_MS: must be >= SUPERVISOR_RESTART_BACKOFF_INITIAL_MS/);
    assert.match(problems({ ...VALID, SUPERVISOR_HEARTBEAT_INTERVAL_MS: '1000', SUPERVISOR_HEARTBEAT_TIMEOUT_MS: '1000' })[0], /^SUPERVISOR_HEARTBEAT_TIMEOUT_MS: must be greater/);
  });

  test('missing required settings are each named', () => {
    const found = problems({});
    assert.deepEqual(found.map((p) => p.split(':')[0]).sort(), ['EXPERIMENT_ID', 'WORKER_AGENT_COMMAND', 'WORKER_EVALUATOR_COMMAND', 'WORKER_REPO_REMOTE_URL']);
    for (const problem of found) assert.match(problem, /is required/);
    assert.deepEqual(problems({ ...VALID, EXPERIMENT_ID: '   ' }).map((p) => p.split(':')[0]), ['EXPERIMENT_ID'], 'blank counts as missing');
  });

  test('every problem is listed at once, one line each', () => {
    const env: Record<string, string> = {};
    for (const [name, value] of INVALID) env[name] ??= value;
    let error: unknown;
    try {
      load(env);
    } catch (caught) {
      error = caught;
    }
    assert.ok(error instanceof SettingsError);
    const names = new Set(INVALID.map(([name]) => name));
    // Every invalid variable, plus the required ones that are missing.
    for (const name of [...names, 'WORKER_REPO_REMOTE_URL']) {
      assert.ok(error.problems.some((p) => p.startsWith(`${name}: `)), `${name} listed in:\n${error.problems.join('\n')}`);
    }
    assert.ok(error.problems.every((p) => !p.includes('\n')));
    assert.equal(error.message.split('\n').length, error.problems.length + 1);
  });
});

describe('argv parsing', () => {
  test('a JSON array of strings', () => {
    assert.deepEqual(parseArgv('["python3", "eval.py", "--flag value"]'), ['python3', 'eval.py', '--flag value']);
    assert.deepEqual(parseArgv('  ["a"]  '), ['a']);
  });

  test('words with single and double quotes; no shell', () => {
    assert.deepEqual(parseArgv('node  eval.js --name "two words" \'single q\''), ['node', 'eval.js', '--name', 'two words', 'single q']);
    assert.deepEqual(parseArgv('a"b c"d'), ['ab cd']);
    assert.deepEqual(parseArgv('echo ""'), ['echo', '']);
    assert.deepEqual(parseArgv('sh -c "echo $HOME | wc"'), ['sh', '-c', 'echo $HOME | wc'], 'nothing is expanded');
  });

  test('errors', () => {
    assert.throws(() => parseArgv('[1, 2]'), /JSON array of strings/);
    assert.throws(() => parseArgv('["a",'), /not valid JSON/);
    assert.throws(() => parseArgv('say "hello'), /unclosed quote/);
    assert.deepEqual(parseArgv('   '), []);
    assert.match(problems({ ...VALID, WORKER_AGENT_COMMAND: '[]' })[0], /^WORKER_AGENT_COMMAND: is empty/);
  });

  test('sizes', () => {
    assert.equal(parseSize('10m'), 10 * 1024 * 1024);
    assert.equal(parseSize('512k'), 512 * 1024);
    assert.equal(parseSize('1G'), 1024 ** 3);
    assert.equal(parseSize('2048'), 2048);
    assert.equal(parseSize('1.5kb'), 1536);
    assert.equal(parseSize('ten'), undefined);
  });
});

describe('.env, environment and overrides', () => {
  test('.env is read; the process environment wins over it; overrides win over both', () => {
    const dir = tempDir('loreley-dotenv-');
    writeFileSync(
      path.join(dir, '.env'),
      [
        '# comment',
        'EXPERIMENT_ID=from-dotenv',
        'WORKER_REPO_REMOTE_URL=/srv/repo.git',
        'WORKER_AGENT_COMMAND="agent --from-dotenv"',
        "WORKER_EVALUATOR_COMMAND='[\"eval\"]'",
        'LOG_LEVEL=debug',
        'SUPERVISOR_WORKERS=3',
        'SUPERVISOR_DRAIN_TIMEOUT_SECONDS=5',
        '',
      ].join('\n'),
    );
    const fromFile = loadSettings({ env: {}, cwd: dir });
    assert.equal(fromFile.experiment.raw, 'from-dotenv');
    assert.deepEqual(fromFile.agent.command, ['agent', '--from-dotenv']);
    assert.deepEqual(fromFile.worker.evaluator.command, ['eval']);
    assert.equal(fromFile.logs.level, 'debug');

    const envWins = loadSettings({ env: { LOG_LEVEL: 'warn', SUPERVISOR_WORKERS: '4' }, cwd: dir });
    assert.equal(envWins.logs.level, 'warn');
    assert.equal(envWins.supervisor.workers, 4);
    assert.equal(envWins.supervisor.drainTimeoutSeconds, 5, 'what the environment leaves unset still comes from .env');

    const flagsWin = loadSettings({ env: { LOG_LEVEL: 'warn', SUPERVISOR_WORKERS: '4' }, overrides: { SUPERVISOR_WORKERS: '7', SUPERVISOR_SCHEDULER: 'false' }, cwd: dir });
    assert.equal(flagsWin.supervisor.workers, 7);
    assert.equal(flagsWin.supervisor.scheduler, false);
    assert.equal(flagsWin.logs.level, 'warn');

    assert.equal(loadSettings({ env: {}, cwd: dir, dotenv: false, overrides: VALID }).experiment.raw, 'circle-packing', 'dotenv: false ignores the file');
    const merged = mergedEnv({ env: { A: 'env' }, cwd: dir, overrides: { A: undefined, B: 'flag' } });
    assert.equal(merged.A, 'env', 'an unset override leaves the value alone');
    assert.equal(merged.B, 'flag');
  });

  test('an invalid value in .env is reported like any other', () => {
    const dir = tempDir('loreley-dotenv-');
    writeFileSync(path.join(dir, '.env'), 'SUPERVISOR_WORKERS=lots\n');
    assert.throws(() => loadSettings({ env: VALID, cwd: dir }), (error: unknown) => {
      assert.ok(error instanceof SettingsError);
      assert.deepEqual(error.problems, ['SUPERVISOR_WORKERS: must be an integer, got "lots"']);
      return true;
    });
  });
});
