import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { tempDir } from '../helpers/git.ts';
import { pidAlive, ROOT } from '../helpers/processes.ts';

/**
 * The package as a user installs it (slow: `npm run test:install`, run by CI after `npm test`):
 * `npm pack`, then `npm install -g --prefix` and `npm install <tarball>` in another project, with
 * an older Node first on PATH (the machine's own when it is older than 22.18, else a stand-in that
 * reports v20). The npm cache is warm: --prefer-offline.
 */

const work = tempDir('loreley-install-');
const spawned: number[] = [];
after(() => {
  for (const pid of spawned) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
});

/** PATH without this repository's node_modules/.bin: npm and node as the machine has them. */
const machinePath = (process.env.PATH ?? '/usr/bin:/bin').split(':').filter((entry) => !entry.includes('node_modules')).join(':');

function sh(command: string, args: string[], options: { cwd: string; PATH: string; timeoutMs?: number }): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { cwd: options.cwd, env: { PATH: options.PATH, HOME: process.env.HOME ?? '/root' }, timeout: options.timeoutMs ?? 300_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    if (child.pid) spawned.push(child.pid);
  });
}

/** A directory whose `node` is older than Loreley needs: the machine's own, or a stand-in reporting v20. */
function oldNodeDir(): string {
  const machine = spawnSync('node', ['--version'], { env: { PATH: machinePath }, encoding: 'utf8' });
  const [major, minor] = (machine.stdout ?? '').replace(/^v/, '').split('.').map(Number);
  if (machine.status === 0 && (major < 22 || (major === 22 && minor < 18))) return path.dirname(spawnSync('sh', ['-c', 'command -v node'], { env: { PATH: machinePath }, encoding: 'utf8' }).stdout.trim());
  const directory = path.join(work, 'old-node');
  mkdirSync(directory, { recursive: true });
  writeFileSync(path.join(directory, 'node'), '#!/bin/sh\nif [ "$1" = --version ]; then echo v20.11.0; exit 0; fi\necho "Node 20 stand-in" >&2\nexit 1\n');
  chmodSync(path.join(directory, 'node'), 0o755);
  return directory;
}

test('npm pack, npm install -g --prefix and npm install <tarball>: both bins run with an older Node first on PATH', async (t) => {
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { env: { PATH: machinePath }, encoding: 'utf8' });
  if (npm.status !== 0) return t.skip('npm is not on the machine PATH');
  const packed = await sh('npm', ['pack', '--pack-destination', work], { cwd: ROOT, PATH: `${path.join(ROOT, 'node_modules', '.bin')}:${machinePath}` });
  assert.equal(packed.code, 0, packed.stderr);
  const tarball = path.join(work, readdirSync(work).find((file) => file.endsWith('.tgz'))!);
  const old = oldNodeDir();

  // Global, into a prefix of its own.
  const prefix = path.join(work, 'prefix');
  let started = performance.now();
  const global = await sh('npm', ['install', '-g', '--prefix', prefix, tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: work, PATH: machinePath });
  t.diagnostic(`npm install -g took ${Math.round(performance.now() - started)} ms`);
  assert.equal(global.code, 0, global.stderr);
  const globalPath = `${old}:${path.join(prefix, 'bin')}:${machinePath}`;
  assert.match((await sh('node', ['--version'], { cwd: work, PATH: globalPath })).stdout, /^v(1\d|20|21|22\.(\d|1[0-7]))\./, 'an old node first');
  const version = await sh('loreley', ['--version'], { cwd: work, PATH: globalPath });
  assert.equal(version.code, 0, version.stderr);
  const help = await sh('loreley-supervisor', ['--help'], { cwd: work, PATH: globalPath });
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^loreley-supervisor \[options\]/);

  // A real small run from the installed package: init, doctor, four jobs on the embedded database.
  const experiment = path.join(work, 'experiment');
  const init = await sh('loreley', ['init', experiment, '--max-jobs', '4'], { cwd: work, PATH: globalPath });
  assert.equal(init.code, 0, init.stderr);
  assert.match(init.stdout, /^ {2}loreley-supervisor --workers 4 --exit-when-done$/m);
  const doctor = await sh('loreley', ['doctor'], { cwd: experiment, PATH: globalPath });
  assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
  started = performance.now();
  const runResult = await sh('loreley-supervisor', ['--workers', '2', '--exit-when-done'], { cwd: experiment, PATH: globalPath, timeoutMs: 180_000 });
  t.diagnostic(`a 4-job run from the global install took ${Math.round(performance.now() - started)} ms`);
  assert.equal(runResult.code, 0, runResult.stderr.slice(-3000));
  assert.match(runResult.stderr, /scheduler reports the run finished/);

  // In another project: the `node` dependency is hoisted to the project's node_modules.
  const project = path.join(work, 'project');
  mkdirSync(project);
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'uses-loreley', version: '1.0.0', private: true }));
  started = performance.now();
  const local = await sh('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: project, PATH: machinePath });
  t.diagnostic(`npm install <tarball> took ${Math.round(performance.now() - started)} ms`);
  assert.equal(local.code, 0, local.stderr);
  assert.ok(existsSync(path.join(project, 'node_modules', 'node', 'bin', 'node')), 'node is hoisted into the project');
  const projectPath = `${old}:${path.join(project, 'node_modules', '.bin')}:${machinePath}`;
  const localVersion = await sh('loreley', ['--version'], { cwd: project, PATH: projectPath });
  assert.equal(localVersion.code, 0, localVersion.stderr);
  const localHelp = await sh('loreley-supervisor', ['--help'], { cwd: project, PATH: projectPath });
  assert.equal(localHelp.code, 0, localHelp.stderr);
});
