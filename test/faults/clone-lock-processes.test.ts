import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { createRemote, git, tempDir } from '../helpers/git.ts';
import { NODE, pidAlive, ROOT } from '../helpers/processes.ts';

/**
 * The clone lock between real processes, as the workers of one host take it (twice per job).
 *
 * It was an exclusive create followed by a write: a taker that read the file in between saw it
 * empty, judged it stale and moved it aside, then put it back after its holder had released it.
 * The lock then named a live process that did not hold it, and every worker of the host waited
 * for it (300 s, then the job failed, then the next): the full-path bench stalled after ~810 jobs.
 * Four processes hammering the lock showed it within seconds.
 */

const LOCK_MODULE = new URL('src/worker/clone-lock.ts', `file://${ROOT}`).href;
const REPOSITORY_MODULE = new URL('src/worker/repository.ts', `file://${ROOT}`).href;

/**
 * One contender: takes the lock `takes` times. Inside, it creates `<lock>.inside` naming itself
 * (exclusively: an existing one naming a live process is an overlap), and with `killChance` it
 * SIGKILLs itself while holding. Each completed take appends a line to `<lock>.done`.
 */
const CONTENDER = `
import { withFileLock } from ${JSON.stringify(LOCK_MODULE)};
import { appendFileSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
const [file, takes, killChance] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
for (let i = 0; i < takes; i += 1) {
  await withFileLock(file, async () => {
    const inside = file + '.inside';
    try {
      closeSync(openSync(inside, 'wx'));
    } catch {
      const other = Number(readFileSync(inside, 'utf8'));
      // A holder killed inside leaves its mark; only a live one overlaps.
      if (other && alive(other)) { console.error('overlap with ' + other); process.exit(3); }
    }
    writeFileSync(inside, String(process.pid));
    if (Math.random() < killChance) process.kill(process.pid, 'SIGKILL');
    await new Promise((resolve) => setImmediate(resolve));
    rmSync(inside, { force: true });
  }, { timeoutMs: 10_000 });
  appendFileSync(file + '.done', process.pid + '\\n');
}
`;

/** One worker's worktree traffic: `jobs` worktrees made and removed on the shared base clone. */
const WORKTREES = `
import { WorkerRepository } from ${JSON.stringify(REPOSITORY_MODULE)};
import { randomUUID } from 'node:crypto';
const [remote, baseClone, commit, jobs] = [process.argv[1], process.argv[2], process.argv[3], Number(process.argv[4])];
const logger = { info() {}, warn() {}, error() {}, child() { return logger; } };
const repository = new WorkerRepository({ settings: { remoteUrl: remote, baseClone, push: true }, logger, workerId: 'w' + process.pid, host: 'test-host' });
for (let i = 0; i < jobs; i += 1) {
  const jobId = randomUUID();
  const worktree = await repository.createWorktree(jobId, 'evolution/job/t/' + jobId, commit);
  await repository.removeWorktree(worktree);
}
`;

const started = new Set<number>();
after(() => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Exited.
    }
  }
});

function run(script: string, args: readonly string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(NODE, ['--input-type=module', '-e', script, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  started.add(child.pid!);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.on('exit', (code, signal) => {
    started.delete(child.pid!);
    resolve({ code, signal, stderr });
  }));
}

/** Resolves with `work`, or fails naming `what` when it takes longer than `ms` (the stall). */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took over ${ms / 1000} s: a lock left behind?`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

function leftovers(directory: string): string[] {
  return readdirSync(directory).filter((name) => /\.(lock|taking|stale)$|\.lock\./.test(name) && !name.endsWith('.done'));
}

test('four processes taking the lock 250 times each: never two inside, never a lock left naming a live process', async () => {
  const directory = tempDir();
  const file = path.join(directory, 'clone.lock');
  const exits = await within(60_000, '4 × 250 takes', Promise.all(Array.from({ length: 4 }, () => run(CONTENDER, [file, '250', '0']))));
  for (const exit of exits) assert.equal(exit.code, 0, exit.stderr);
  assert.equal(readFileSync(`${file}.done`, 'utf8').trim().split('\n').length, 1000);
  assert.deepEqual(leftovers(directory), [], 'no lock file, draft or aside left');
});

test('holders SIGKILLed inside the lock: the next takers break it, one at a time, and go on', async () => {
  const directory = tempDir();
  const file = path.join(directory, 'clone.lock');
  writeFileSync(`${file}.done`, '');
  const target = 300;
  const done = () => readFileSync(`${file}.done`, 'utf8').split('\n').filter(Boolean).length;
  let kills = 0;
  // Four contenders at all times until the target is reached: one killed is replaced.
  const contender = async (): Promise<void> => {
    while (done() < target) {
      const exit = await run(CONTENDER, [file, '100', '0.05']);
      if (exit.signal === 'SIGKILL') kills += 1;
      else assert.equal(exit.code, 0, exit.stderr);
    }
  };
  await within(120_000, `${target} takes with holders killed`, Promise.all(Array.from({ length: 4 }, contender)));
  assert.ok(kills > 0, 'some holders were killed inside the lock');
  // A holder killed inside the last take may leave its lock (the next taker would break it).
  if (existsSync(file)) assert.ok(!pidAlive((JSON.parse(readFileSync(file, 'utf8')) as { pid: number }).pid), 'no lock left naming a live process');
});

test('four workers making and removing 40 worktrees each on one base clone: none waits on a lock left behind', async () => {
  const { remote, commit } = createRemote({ 'prog.txt': 'x = 1\n' });
  const directory = tempDir();
  const baseClone = path.join(directory, 'clone');
  const exits = await within(120_000, '4 × 40 worktrees', Promise.all(Array.from({ length: 4 }, () => run(WORKTREES, [remote, baseClone, commit, '40']))));
  for (const exit of exits) assert.equal(exit.code, 0, exit.stderr);
  assert.equal(git(baseClone, 'worktree', 'list').split('\n').length, 1, 'every worktree unregistered');
  assert.deepEqual(leftovers(directory), [], 'no lock file, draft or aside left');
});
