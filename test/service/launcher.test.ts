import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir } from '../helpers/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { killAllSpawned, readLog, ROOT, waitFor } from '../helpers/processes.ts';

/**
 * bin/loreley and bin/loreley-supervisor (sh launchers) as npm puts them on PATH, with an old
 * `node` first on PATH: they find the package's own Node 24 and exec it, keeping the pid.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

/** A directory with a `node` that reports v20.11.0 and runs nothing, and the bins linked the way `npm link` does. */
function pathWithOldNode(): { bin: string; PATH: string } {
  const root = tempDir('loreley-launcher-');
  const oldNode = path.join(root, 'old-node');
  mkdirSync(oldNode);
  writeFileSync(path.join(oldNode, 'node'), '#!/bin/sh\nif [ "$1" = --version ]; then echo v20.11.0; exit 0; fi\necho "this is Node 20: it cannot run Loreley" >&2\nexit 1\n');
  chmodSync(path.join(oldNode, 'node'), 0o755);
  // npm link: <prefix>/bin/loreley -> ../lib/node_modules/loreley/bin/loreley, and
  // <prefix>/lib/node_modules/loreley -> the package directory.
  const prefix = path.join(root, 'prefix');
  mkdirSync(path.join(prefix, 'bin'), { recursive: true });
  mkdirSync(path.join(prefix, 'lib', 'node_modules'), { recursive: true });
  symlinkSync(ROOT.replace(/\/$/, ''), path.join(prefix, 'lib', 'node_modules', 'loreley'));
  for (const name of ['loreley', 'loreley-supervisor']) symlinkSync(`../lib/node_modules/loreley/bin/${name}`, path.join(prefix, 'bin', name));
  return { bin: path.join(prefix, 'bin'), PATH: `${oldNode}:${path.join(prefix, 'bin')}:/usr/bin:/bin` };
}

function run(command: string, args: string[], env: Record<string, string>, cwd = '/'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('through npm-link symlinks, with Node 20 first on PATH: --version and --help work', async () => {
  const { PATH } = pathWithOldNode();
  const env = { PATH, HOME: process.env.HOME ?? '/root' };
  assert.equal((await run('node', ['--version'], env)).stdout.trim(), 'v20.11.0', 'the old node is first on PATH');
  const version = await run('loreley', ['--version'], env);
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout.trim(), JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  const help = await run('loreley-supervisor', ['--help'], env);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^loreley-supervisor \[options\]/);
  assert.match(help.stdout, /--check/);
});

test('LORELEY_NODE naming a Node that is too old: one line, exit 1', async () => {
  const { PATH } = pathWithOldNode();
  const oldNode = PATH.split(':')[0];
  const result = await run('loreley', ['--version'], { PATH, HOME: '/root', LORELEY_NODE: path.join(oldNode, 'node') });
  assert.equal(result.code, 1);
  assert.equal(result.stderr, `loreley: LORELEY_NODE=${path.join(oldNode, 'node')} is not a Node.js 22.18 or newer\n`);
});

test('the supervisor started through the launcher keeps the pid: the process is Node 24 running the supervisor', async () => {
  const { bin, PATH } = pathWithOldNode();
  const fixture = await createFixture({ experimentId: 'launcher', env: { PATH } });
  const supervisor = spawn(path.join(bin, 'loreley-supervisor'), ['--workers', '1', '--no-scheduler'], { env: fixture.env, cwd: fixture.root, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  supervisor.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => supervisor.on('exit', (code) => resolve(code)));
  try {
    const log = () => readLog(logDir(fixture, fixtureSettings(fixture), 'supervisor', 'supervisor'));
    await waitFor('the worker to be ready', () => log().some((line) => line.msg === 'all children ready'), 60_000);
    const cmdline = readFileSync(`/proc/${supervisor.pid}/cmdline`, 'utf8').split('\0');
    assert.equal(path.basename(cmdline[0]), 'node');
    assert.ok(cmdline[0].includes(path.join('node_modules', 'node', 'bin')) || cmdline[0] === 'node', `the package's Node: ${cmdline[0]}`);
    assert.ok(cmdline[1].endsWith(path.join('bin', 'loreley-supervisor.js')), cmdline.join(' '));
    assert.equal(log()[0].pid, supervisor.pid, 'the supervisor logs with the pid its parent started');
    process.kill(supervisor.pid!, 'SIGTERM');
    assert.equal(await exited, 0, stderr);
  } finally {
    try {
      process.kill(-supervisor.pid!, 'SIGKILL');
    } catch {
      // Gone.
    }
  }
});
