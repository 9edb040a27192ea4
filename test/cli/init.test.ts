import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadSettings } from '../../src/shared/settings/index.ts';
import { git, tempDir } from '../helpers/git.ts';
import { baseEnv, killAllSpawned, NODE, spawnLoreley } from '../helpers/processes.ts';

/** `loreley init <dir> --example circle-packing` as a user runs it. */

after(() => killAllSpawned());

async function init(args: string[], cwd: string) {
  const run = spawnLoreley(['init', ...args], { env: baseEnv(), cwd });
  const exit = await run.waitExit(30_000);
  return { code: exit.code, stdout: run.stdout(), stderr: run.stderr() };
}

function parseEnv(text: string): Record<string, string> {
  const entries: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    const at = line.indexOf('=');
    assert.ok(at > 0, `a KEY=value line: ${line}`);
    entries[line.slice(0, at)] = line.slice(at + 1);
  }
  return entries;
}

describe('loreley init --example circle-packing', () => {
  const parent = tempDir('loreley-init-test-');
  const directory = path.join(parent, 'my-experiment');

  test('creates remote.git (a bare repo with pack.js on main), tools/, README.md and a .env with absolute paths', async () => {
    // A relative directory, resolved against the working directory.
    const { code, stdout, stderr } = await init(['my-experiment', '--example', 'circle-packing'], parent);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
    assert.match(stdout, new RegExp(`^Created the circle-packing experiment in ${directory}\n`));
    assert.match(stdout, /^  loreley-supervisor --workers 4 --exit-when-done$/m);
    assert.deepEqual(readdirSync(directory).sort(), ['.env', 'README.md', 'ecosystem.config.cjs', 'loreley.service', 'remote.git', 'tools']);

    // remote.git: bare, one commit on main holding the program (and nothing of tools/).
    const remote = path.join(directory, 'remote.git');
    assert.equal(git(remote, 'rev-parse', '--is-bare-repository'), 'true');
    assert.equal(git(remote, 'symbolic-ref', 'HEAD'), 'refs/heads/main');
    assert.equal(git(remote, 'rev-list', '--count', 'main'), '1');
    const files = git(remote, 'ls-tree', '-r', '--name-only', 'main').split('\n');
    assert.ok(files.includes('pack.js'), `pack.js on main: ${files.join(', ')}`);
    assert.ok(!files.some((file) => file.startsWith('tools/')), 'the evaluator is not in the evolved repository');
    assert.equal(git(remote, 'show', 'main:pack.js'), readFileSync(new URL('../../examples/circle-packing/program/pack.js', import.meta.url), 'utf8').trimEnd());

    // tools/: the evaluator and the mutation operator.
    for (const tool of ['evaluate.js', 'perturb-centers.js']) assert.ok(statSync(path.join(directory, 'tools', tool)).isFile(), `tools/${tool}`);

    // .env: the experiment, with absolute paths to what init created.
    const env = parseEnv(readFileSync(path.join(directory, '.env'), 'utf8'));
    assert.equal(env.EXPERIMENT_ID, 'circle-packing');
    assert.equal(env.WORKER_REPO_REMOTE_URL, remote);
    assert.ok(path.isAbsolute(env.WORKER_REPO_REMOTE_URL));
    assert.equal(env.WORKER_REPO_BRANCH, 'main');
    const agent = JSON.parse(env.WORKER_AGENT_COMMAND) as string[];
    const evaluator = JSON.parse(env.WORKER_EVALUATOR_COMMAND) as string[];
    assert.deepEqual(agent, ['node', path.join(directory, 'tools', 'perturb-centers.js')]);
    assert.deepEqual(evaluator, ['node', path.join(directory, 'tools', 'evaluate.js')]);
    for (const file of [agent[1], evaluator[1]]) {
      assert.ok(path.isAbsolute(file), `${file} is absolute`);
      assert.ok(existsSync(file), `${file} exists`);
    }
    assert.equal(env.SCHEDULER_MAX_TOTAL_JOBS, '24', 'the default budget');
  });

  test('the .env is valid settings, read from the experiment directory', () => {
    const settings = loadSettings({ env: baseEnv(), cwd: directory });
    assert.equal(settings.experiment.namespace, 'circle-packing-a7780c9d');
    assert.equal(settings.repository.remoteUrl, path.join(directory, 'remote.git'));
    assert.equal(settings.archive.fitnessMetric, 'combined_score');
    assert.equal(settings.database.url, undefined, 'the embedded database by default');
  });

  test('the program on main scores with the evaluator in tools/', () => {
    const checkout = path.join(parent, 'checkout');
    git(parent, 'clone', '--quiet', path.join(directory, 'remote.git'), checkout);
    const output = execFileSync(NODE, [path.join(directory, 'tools', 'evaluate.js')], {
      cwd: checkout,
      encoding: 'utf8',
      env: { ...baseEnv(), PATH: `${path.dirname(NODE)}:${process.env.PATH ?? ''}` },
    });
    const result = JSON.parse(output.trim().split('\n').at(-1)!) as { metrics: Array<{ name: string; value: number }> };
    const metrics = Object.fromEntries(result.metrics.map((m) => [m.name, m.value]));
    assert.equal(metrics.validity, 1, output);
    assert.ok(metrics.combined_score > 0, output);
  });

  test('again on the now non-empty directory: exit 1 with a one-line error, nothing changed', async () => {
    const envBefore = readFileSync(path.join(directory, '.env'), 'utf8');
    const headBefore = git(path.join(directory, 'remote.git'), 'rev-parse', 'main');
    const { code, stdout, stderr } = await init([directory, '--example', 'circle-packing'], parent);
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
    assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    assert.match(stderr, new RegExp(`^loreley init: ${directory} is not empty`));
    assert.equal(readFileSync(path.join(directory, '.env'), 'utf8'), envBefore);
    assert.equal(git(path.join(directory, 'remote.git'), 'rev-parse', 'main'), headBefore);
  });

  test('a non-empty directory of someone else\'s files is refused too, and left alone', async () => {
    const other = tempDir('loreley-init-busy-');
    execFileSync('touch', [path.join(other, 'precious.txt')]);
    const { code, stderr } = await init([other], parent);
    assert.equal(code, 1);
    assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);
    assert.deepEqual(readdirSync(other), ['precious.txt']);
  });
});

describe('loreley init with a bad example', () => {
  let result: { code: number | null; stdout: string; stderr: string };
  let parent: string;

  test('--example nope: exit 1, an error naming the value and the choices, no stack trace, no directory created', async () => {
    parent = tempDir('loreley-init-nope-');
    result = await init(['exp', '--example', 'nope'], parent);
    const { code, stdout, stderr } = result;
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
    assert.match(stderr, /^loreley: /);
    assert.match(stderr, /"nope"/);
    assert.match(stderr, /circle-packing/);
    assert.match(stderr.trimEnd().split('\n').at(-1)!, /--help/);
    assert.ok(!existsSync(path.join(parent, 'exp')), 'nothing was created');
  });

  test(
    '--example nope: the error is one line (plus the usage hint), like --workers abc',
    () => {
      assert.ok(result, 'needs the previous test');
      const lines = result.stderr.trimEnd().split('\n');
      assert.ok(lines.length <= 2, `one error line (plus a usage hint):\n${result.stderr}`);
      assert.match(lines[0], /^loreley: .*nope.*circle-packing/);
    },
  );
});
