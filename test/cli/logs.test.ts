import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { resolveExperiment } from '../../src/shared/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, killAllSpawned, spawnLoreley, waitFor } from '../helpers/processes.ts';

/**
 * `loreley logs` over a log tree laid out as the processes write it (pino-roll's
 * `<id>.<N>.jsonl`, several processes, rotated files whose lines interleave in time with other
 * processes'), with every filter; and `--follow` across appends, a rotation and a process that
 * starts after it.
 */

after(() => killAllSpawned());

const experiment = resolveExperiment('logs-test');
const base = tempDir('loreley-logs-');
const root = path.join(base, 'logs', experiment.namespace);
const env = baseEnv({ EXPERIMENT_ID: experiment.raw, LOGS_BASE_DIR: base });

function line(time: string, id: string, role: string, level: string, msg: string, extra: Record<string, unknown> = {}): string {
  return `${JSON.stringify({ level, time: `2026-11-23T10:00:${time}Z`, workerId: id, role, pid: 100, host: 'h1', ...extra, msg })}\n`;
}

function writeLog(role: string, id: string, n: number, lines: string[]): string {
  const directory = path.join(root, role, id);
  mkdirSync(directory, { recursive: true });
  const file = path.join(directory, `${id}.${n}.jsonl`);
  writeFileSync(file, lines.join(''));
  return file;
}

// worker0001 rotated after 03; 10 sorts after 9 (numeric, not by name).
writeLog('worker', 'worker0001', 9, [line('01.000', 'worker0001', 'worker', 'info', 'w1 first'), line('03.000', 'worker0001', 'worker', 'warn', 'w1 slow', { jobId: 'aaaa1111-job' })]);
writeLog('worker', 'worker0001', 10, [line('05.000', 'worker0001', 'worker', 'error', 'w1 failed', { jobId: 'aaaa1111-job' })]);
writeLog('worker', 'worker0002', 1, [line('02.000', 'worker0002', 'worker', 'debug', 'w2 detail'), line('06.000', 'worker0002', 'worker', 'info', 'w2 done', { jobId: 'bbbb2222-job' })]);
writeLog('scheduler', 'scheduler0001', 1, [line('04.000', 'scheduler0001', 'scheduler', 'info', 'tick'), '{"torn": \n']);
writeLog('supervisor', 'supervisor', 1, [line('00.500', 'supervisor', 'supervisor', 'info', 'supervisor started')]);

async function logs(args: string[]) {
  const run = spawnLoreley(['logs', ...args], { env, cwd: base });
  const exit = await run.waitExit(30_000);
  return { code: exit.code, stdout: run.stdout(), stderr: run.stderr() };
}

const messages = (stdout: string) => stdout.trimEnd().split('\n').filter(Boolean).map((text) => (JSON.parse(text) as { msg: string }).msg);

test('every process, across rotated files, merged in time order; --json prints the lines as written', async () => {
  const { code, stdout, stderr } = await logs(['--json']);
  assert.equal(code, 0, stderr);
  assert.deepEqual(messages(stdout), ['supervisor started', 'w1 first', 'w2 detail', 'w1 slow', 'tick', 'w1 failed', 'w2 done']);
  assert.ok(stdout.includes(line('01.000', 'worker0001', 'worker', 'info', 'w1 first')), 'raw lines, unchanged');
});

test('filters: ids, --role, --level, --job (a prefix), --since, -n', async () => {
  assert.deepEqual(messages((await logs(['worker0001', 'scheduler0001', '--json'])).stdout), ['w1 first', 'w1 slow', 'tick', 'w1 failed']);
  assert.deepEqual(messages((await logs(['--role', 'worker', '--json'])).stdout), ['w1 first', 'w2 detail', 'w1 slow', 'w1 failed', 'w2 done']);
  assert.deepEqual(messages((await logs(['--level', 'warn', '--json'])).stdout), ['w1 slow', 'w1 failed']);
  assert.deepEqual(messages((await logs(['--job', 'aaaa1111', '--json'])).stdout), ['w1 slow', 'w1 failed']);
  assert.deepEqual(messages((await logs(['--since', '2026-11-23T10:00:04Z', '--json'])).stdout), ['tick', 'w1 failed', 'w2 done']);
  assert.deepEqual(messages((await logs(['-n', '2', '--json'])).stdout), ['w1 failed', 'w2 done']);
  assert.deepEqual(messages((await logs(['--since', '1h', '--json'])).stdout), [], 'a duration counts back from now');
});

test('readable lines by default: time, level, process and message, one line each', async () => {
  const { code, stdout } = await logs(['worker0001']);
  assert.equal(code, 0);
  const lines = stdout.trimEnd().split('\n');
  assert.equal(lines.length, 3, stdout);
  assert.match(lines[1], /^\[2026-11-23 \d\d:00:03\.000\] WARN: \[worker0001\] w1 slow \{"jobId":"aaaa1111-job"\}$/);
  assert.doesNotMatch(stdout, /\u001b\[/, 'no colour codes when stdout is not a terminal');
});

test('bad input: one line and exit 1', async () => {
  for (const [args, pattern] of [
    [['nobody'], /^loreley logs: no logs match nobody \(processes with logs: scheduler0001, supervisor, worker0001, worker0002\)$/],
    [['--since', 'yesterday-ish'], /^loreley logs: --since "yesterday-ish": expected a duration/],
    [['--level', 'loud'], /^loreley: Invalid values: Argument: level/],
  ] as const) {
    const { code, stdout, stderr } = await logs([...args]);
    assert.equal(code, 1, stderr);
    assert.equal(stdout, '');
    assert.match(stderr.split('\n')[0], pattern);
  }
  const run = spawnLoreley(['logs'], { env: baseEnv({ EXPERIMENT_ID: 'never-ran', LOGS_BASE_DIR: base }), cwd: base });
  assert.equal((await run.waitExit(30_000)).code, 1);
  assert.match(run.stderr(), /^loreley logs: no logs for experiment never-ran under /);
});

test('--follow prints what is appended, follows a rotation and picks up a process that starts later', async () => {
  const follow = spawnLoreley(['logs', '-f', '--json', '-n', '1', '--role', 'worker'], { env, cwd: base });
  const seen = () => messages(follow.stdout());
  await waitFor('the last line already written', () => seen().includes('w2 done'), 20_000, 50, follow);
  assert.deepEqual(seen(), ['w2 done']);

  appendFileSync(path.join(root, 'worker', 'worker0002', 'worker0002.1.jsonl'), line('07.000', 'worker0002', 'worker', 'info', 'w2 appended'));
  await waitFor('an appended line', () => seen().includes('w2 appended'), 20_000, 50, follow);

  // Rotation: the next number is a new file; the old one is not re-read.
  writeLog('worker', 'worker0002', 2, [line('08.000', 'worker0002', 'worker', 'info', 'w2 after rotation')]);
  await waitFor('the rotated-in file', () => seen().includes('w2 after rotation'), 20_000, 50, follow);

  // A worker that starts after `logs -f` did; and a line written in two pieces is printed whole, once.
  writeLog('worker', 'worker0003', 1, [line('09.000', 'worker0003', 'worker', 'info', 'w3 started')]);
  const partial = line('10.000', 'worker0003', 'worker', 'info', 'w3 split line');
  appendFileSync(path.join(root, 'worker', 'worker0003', 'worker0003.1.jsonl'), partial.slice(0, 30));
  await waitFor('the new process', () => seen().includes('w3 started'), 20_000, 50, follow);
  appendFileSync(path.join(root, 'worker', 'worker0003', 'worker0003.1.jsonl'), partial.slice(30));
  await waitFor('the split line', () => seen().includes('w3 split line'), 20_000, 50, follow);

  // Another role is still filtered out while following.
  appendFileSync(path.join(root, 'scheduler', 'scheduler0001', 'scheduler0001.1.jsonl'), line('11.000', 'scheduler0001', 'scheduler', 'info', 'not a worker'));
  appendFileSync(path.join(root, 'worker', 'worker0001', 'worker0001.10.jsonl'), line('12.000', 'worker0001', 'worker', 'info', 'w1 last'));
  await waitFor('the last line', () => seen().includes('w1 last'), 20_000, 50, follow);
  assert.deepEqual(seen(), ['w2 done', 'w2 appended', 'w2 after rotation', 'w3 started', 'w3 split line', 'w1 last']);

  follow.killGroup('SIGINT');
  assert.equal((await follow.waitExit(10_000)).code, 0, 'Ctrl+C ends it cleanly');
});
