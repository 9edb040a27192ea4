import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { resolveExperiment } from '../../src/shared/experiment.ts';
import { createProcessLog, logDirectory, removeExpiredLogFiles, urlPasswords } from '../../src/shared/logger.ts';
import type { LogSettings } from '../../src/shared/settings/index.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, jsonlFiles, killAllSpawned, readLog, spawnNode, waitFor } from '../helpers/processes.ts';

/** The process log: JSONL files that keep every line through exits and signals, rotate, expire and redact. */

after(() => killAllSpawned());

const experiment = resolveExperiment('logger-test');
const DAY = 24 * 60 * 60 * 1000;

function settings(baseDir: string, extra: Partial<LogSettings> = {}): LogSettings {
  return { level: 'trace', baseDir, rotateBytes: 10 * 1024 * 1024, retentionDays: 14, console: false, ...extra };
}

/**
 * A tiny process that creates its log with createProcessLog, logs `LINES` lines, and then does what
 * `MODE` says: exit at once, wait for a signal with or without a handler.
 */
const CHILD = `
import { createProcessLog } from ${JSON.stringify(pathToFileURL(path.resolve('src/shared/logger.ts')).href)};
import { resolveExperiment } from ${JSON.stringify(pathToFileURL(path.resolve('src/shared/experiment.ts')).href)};
const log = await createProcessLog({
  settings: { level: 'info', baseDir: process.env.BASE, rotateBytes: 10 * 1024 * 1024, retentionDays: 14, console: process.env.CONSOLE === '1' },
  experiment: resolveExperiment('logger-test'),
  role: 'worker',
  workerId: 'worker0042',
  secrets: ['child-secret-value'],
});
const lines = Number(process.env.LINES);
for (let i = 0; i < lines; i += 1) log.logger.info({ i, padding: 'x'.repeat(100) }, 'line');
const mode = process.env.MODE;
if (mode === 'exit') {
  log.logger.info('last words before exit');
  process.exit(0);
}
if (mode === 'burst') {
  process.stdout.write('burst done\\n');
  process.exit(0);
}
if (mode === 'multiline') {
  log.logger.info({ summary: 'Run finished.\\n  best 0.9' }, 'run summary');
  process.exit(0);
}
if (mode === 'throw') {
  log.logger.error('about to throw');
  throw new Error('boom');
}
if (mode === 'handler') {
  process.on('SIGTERM', () => {
    log.logger.warn('terminating on SIGTERM (child-secret-value)');
    process.exit(143);
  });
}
log.logger.info('waiting for a signal');
process.stdout.write('ready\\n');
setInterval(() => undefined, 1000);
`;

function runChild(mode: string, lines: number, console = false) {
  const base = tempDir('loreley-logger-');
  const child = spawnNode(['--input-type=module', '-e', CHILD], { env: baseEnv({ BASE: base, MODE: mode, LINES: String(lines), CONSOLE: console ? '1' : '0' }), cwd: process.cwd() });
  const directory = logDirectory(settings(base), experiment, 'worker', 'worker0042');
  return { child, directory };
}

describe('no line is lost', () => {
  const LINES = 2000;

  test('when the process calls process.exit() right after logging', async () => {
    const { child, directory } = runChild('exit', LINES);
    assert.equal((await child.waitExit(20_000)).code, 0, child.stderr().slice(-1000));
    const lines = readLog(directory);
    assert.equal(lines.filter((line) => line.msg === 'line').length, LINES);
    assert.equal(lines.at(-1)?.msg, 'last words before exit');
  });

  test('when the process dies of an uncaught exception', async () => {
    const { child, directory } = runChild('throw', LINES);
    assert.equal((await child.waitExit(20_000)).code, 1);
    const lines = readLog(directory);
    assert.equal(lines.filter((line) => line.msg === 'line').length, LINES);
    assert.equal(lines.at(-1)?.msg, 'about to throw');
  });

  for (const [mode, signal] of [['default', 'SIGTERM'], ['default', 'SIGKILL'], ['handler', 'SIGTERM']] as const) {
    test(`when the process gets ${signal} (${mode === 'handler' ? 'it logs and exits' : 'no handler'})`, async () => {
      const { child, directory } = runChild(mode, LINES);
      await waitFor('the child to be ready', () => child.stdout().includes('ready'), 20_000, 20, child);
      process.kill(child.pid, signal);
      const exit = await child.waitExit(20_000);
      const lines = readLog(directory);
      assert.equal(lines.filter((line) => line.msg === 'line').length, LINES);
      if (mode === 'handler') {
        assert.equal(exit.code, 143);
        assert.equal(lines.at(-1)?.msg, 'terminating on SIGTERM ([redacted])');
      } else {
        assert.equal(exit.signal, signal);
        assert.equal(lines.at(-1)?.msg, 'waiting for a signal');
      }
      for (const line of lines) {
        assert.equal(line.workerId, 'worker0042');
        assert.equal(line.role, 'worker');
        assert.equal(line.pid, child.pid);
        assert.equal(line.host, os.hostname());
        assert.equal(typeof line.time, 'string');
        assert.ok(['info', 'warn'].includes(line.level));
      }
    });
  }
});

describe('the console', () => {
  test('a console line is written to stderr, human-readable and scrubbed', async () => {
    const { child } = runChild('handler', 3, true);
    await waitFor('the child to be ready', () => child.stdout().includes('ready'), 20_000, 20, child);
    process.kill(child.pid, 'SIGTERM');
    assert.equal((await child.waitExit(20_000)).code, 143);
    assert.match(child.stderr(), /^\d\d:\d\d:\d\d WARN  terminating on SIGTERM \(\[redacted\]\)$/m);
    assert.match(child.stderr(), /^\d\d:\d\d:\d\d INFO  line i=0 padding=x+$/m);
  });

  test('a value of several lines shows its first line on the console and stays whole in the file', async () => {
    const { child, directory } = runChild('multiline', 0, true);
    assert.equal((await child.waitExit(20_000)).code, 0);
    assert.match(child.stderr(), /^\d\d:\d\d:\d\d INFO  run summary summary=Run finished\. …$/m);
    assert.doesNotMatch(child.stderr(), /best 0\.9/);
    const records = readdirSync(directory).flatMap((file) => readFileSync(path.join(directory, file), 'utf8').trim().split('\n')).map((line) => JSON.parse(line));
    assert.equal(records.find((record) => record.msg === 'run summary')?.summary, 'Run finished.\n  best 0.9');
  });

  test(
    'a burst of lines to a stderr pipe that is read slowly does not crash the process',
    async () => {
      const { child, directory } = runChild('burst', 2000, true);
      // The reader falls behind for a moment, as a busy log collector does.
      child.child.stderr!.pause();
      await waitFor('the child to log while its stderr is not read', () => child.child.exitCode !== null || readLog(directory).some((line) => line.msg === 'line'), 20_000, 10);
      child.child.stderr!.resume();
      const exit = await child.waitExit(20_000);
      assert.equal(exit.code, 0, child.stderr().split('\n').filter((line) => /Error|EAGAIN/.test(line)).join('\n'));
      assert.equal(readLog(directory).filter((line) => line.msg === 'line').length, 2000);
    },
  );
});

describe('files', () => {
  test('live in <base>/logs/<namespace>/<role>/<workerId>/<workerId>.N.jsonl', async () => {
    const base = tempDir('loreley-logger-');
    const log = await createProcessLog({ settings: settings(base), experiment, role: 'scheduler', workerId: 'scheduler0001' });
    log.logger.info('hello');
    log.flush();
    assert.equal(log.directory, path.join(base, 'logs', 'logger-test-' + experiment.uuid.slice(0, 8), 'scheduler', 'scheduler0001'));
    assert.deepEqual(readdirSync(log.directory), ['scheduler0001.1.jsonl']);
    const [line] = readLog(log.directory);
    assert.equal(line.msg, 'hello');
    assert.equal(line.level, 'info');
  });

  test('rotate by size into numbered files without losing a line', async () => {
    const base = tempDir('loreley-logger-');
    const log = await createProcessLog({ settings: settings(base, { rotateBytes: 1024 }), experiment, role: 'worker', workerId: 'worker0001' });
    const count = 200;
    // A process that logs over time (not in one synchronous burst): the event loop turns between lines.
    for (let i = 0; i < count; i += 1) {
      log.logger.info({ i, padding: 'y'.repeat(150) }, 'rotating');
      await new Promise((resolve) => setImmediate(resolve));
    }
    log.flush();
    // Writes are synchronous; the wait is kept for any destination that is not.
    await waitFor('every line in the files', () => readLog(log.directory).length === count, 5000, 10);
    const files = jsonlFiles(log.directory).map((file) => path.basename(file));
    assert.ok(files.length >= 3, `several files: ${files.join(', ')}`);
    for (const file of files) assert.match(file, /^worker0001\.\d+\.jsonl$/);
    const numbers = files.map((file) => Number(file.split('.')[1])).sort((a, b) => a - b);
    assert.deepEqual(numbers, numbers.map((_, index) => index + 1), 'numbered 1..N');
    for (const file of jsonlFiles(log.directory)) {
      assert.ok(readFileSync(file).length < 1024 + 400, `${path.basename(file)} is about the rotation size`);
    }
    // Every line once, in order, across the files.
    const seen = numbers.flatMap((n) =>
      readFileSync(path.join(log.directory, `worker0001.${n}.jsonl`), 'utf8')
        .split('\n')
        .filter((text) => text !== '')
        .map((text) => JSON.parse(text).i as number),
    );
    assert.deepEqual(seen, Array.from({ length: count }, (_, i) => i));
  });

  test('a restarted process continues in the newest numbered file and rotates on from there', async () => {
    const base = tempDir('loreley-logger-');
    const options = { settings: settings(base, { rotateBytes: 1024 }), experiment, role: 'worker' as const, workerId: 'worker0001' };
    const first = await createProcessLog(options);
    for (let i = 0; i < 20; i += 1) first.logger.info({ i, padding: 'z'.repeat(150) }, 'first');
    first.flush();
    const before = jsonlFiles(first.directory).map((file) => path.basename(file));
    const newest = Math.max(...before.map((file) => Number(file.split('.')[1])));
    const second = await createProcessLog(options);
    second.logger.info('second process');
    const files = jsonlFiles(second.directory).map((file) => path.basename(file));
    const withSecond = files.filter((file) => readFileSync(path.join(second.directory, file), 'utf8').includes('second process'));
    // The newest file of the first process (or, if that one was full, the next number).
    assert.ok([newest, newest + 1].includes(Number(withSecond[0]?.split('.')[1])), `${withSecond.join(', ')} after ${before.join(', ')}`);
    assert.equal(readLog(second.directory).length, 21, 'no line lost or repeated');
  });

  test('older than the retention are removed, newer ones and other files kept', () => {
    const directory = tempDir('loreley-logger-');
    const now = Date.parse('2026-06-30T12:00:00Z');
    const file = (name: string, ageDays: number) => {
      const full = path.join(directory, name);
      writeFileSync(full, '{}\n');
      const at = new Date(now - ageDays * DAY);
      utimesSync(full, at, at);
      return full;
    };
    const old1 = file('worker0001.1.jsonl', 30);
    const old2 = file('worker0001.2.jsonl', 14.5);
    const fresh = file('worker0001.3.jsonl', 13);
    const current = file('worker0001.4.jsonl', 0);
    const notLog = file('notes.txt', 100);
    const removed = removeExpiredLogFiles(directory, 14, now);
    assert.deepEqual(removed.sort(), [old1, old2].sort());
    for (const kept of [fresh, current, notLog]) assert.ok(existsSync(kept), `${path.basename(kept)} kept`);
    assert.deepEqual(removeExpiredLogFiles(directory, 0, now + 1000 * DAY), [], 'retention 0 keeps everything');
    assert.deepEqual(removeExpiredLogFiles(path.join(directory, 'missing'), 14, now), [], 'a missing directory is fine');
  });

  test('expired files are swept when a process log is created', async () => {
    const base = tempDir('loreley-logger-');
    const directory = logDirectory(settings(base), experiment, 'worker', 'worker0003');
    mkdirSync(directory, { recursive: true });
    const stale = path.join(directory, 'worker0003.7.jsonl');
    writeFileSync(stale, '{}\n');
    const at = new Date(Date.now() - 3 * DAY);
    utimesSync(stale, at, at);
    const log = await createProcessLog({ settings: settings(base, { retentionDays: 2 }), experiment, role: 'worker', workerId: 'worker0003' });
    log.logger.info('new');
    log.flush();
    assert.ok(!existsSync(stale));
  });
});

describe('redaction', () => {
  test('secrets are scrubbed wherever they appear; sensitive keys are censored', async () => {
    const base = tempDir('loreley-logger-');
    const password = 'Pw-7Hq_s3cr3t.value';
    const url = `postgres://loreley:${password}@db.example:5432/loreley`;
    assert.deepEqual(urlPasswords(url), [password]);
    assert.deepEqual(urlPasswords('postgres://u@h/db'), []);
    assert.deepEqual(urlPasswords('not a url'), []);
    const apiKey = 'sk-test-secret-value';
    const quoted = 'with"quote\\and-backslash';
    const log = await createProcessLog({ settings: settings(base), experiment, role: 'worker', workerId: 'worker0001', secrets: [password, apiKey, quoted, 'abc'] });
    log.logger.info({ password: 'hunter2-field', apiKey: 'field-key-1234', nested: { token: 'tok-5678', authorization: 'Bearer zzz-9999' } }, 'keys');
    log.logger.info({ DATABASE_URL: url, databaseUrl: url, OPENAI_API_KEY: apiKey }, 'env-like keys');
    log.logger.info(`free text with ${apiKey} and ${password} inside`);
    log.logger.info({ detail: { deeper: [`key=${apiKey}`, `quoted=${quoted}`] } }, 'nested value');
    log.logger.error({ err: new Error(`connect failed for ${url}`) }, 'error with a secret in its message and stack');
    log.logger.info({ short: 'abc' }, 'secrets shorter than 4 characters are not scrubbed (they would eat ordinary words)');
    log.flush();
    const text = jsonlFiles(log.directory).map((file) => readFileSync(file, 'utf8')).join('');
    for (const secret of [password, apiKey, quoted, JSON.stringify(quoted).slice(1, -1), 'hunter2-field', 'field-key-1234', 'tok-5678', 'zzz-9999']) {
      assert.ok(!text.includes(secret), `${secret} leaked:\n${text}`);
    }
    const lines = readLog(log.directory);
    assert.equal(lines[0].password, '[redacted]');
    assert.equal((lines[0].nested as { token: string }).token, '[redacted]');
    assert.equal(lines[1].DATABASE_URL, '[redacted]');
    assert.equal(lines[2].msg, 'free text with [redacted] and [redacted] inside');
    assert.deepEqual((lines[3].detail as { deeper: string[] }).deeper, ['key=[redacted]', 'quoted=[redacted]']);
    assert.match(JSON.stringify(lines[4].err), /\[redacted\]/);
    assert.equal(lines[5].short, 'abc');
  });

  test(
    'a password that needs percent-encoding does not leak through a connection URL in free text',
    async () => {
      const base = tempDir('loreley-logger-');
      const password = 'p@ss/w#rd:"x"';
      const url = `postgres://loreley:${encodeURIComponent(password)}@db.example:5432/loreley`;
      const log = await createProcessLog({ settings: settings(base), experiment, role: 'worker', workerId: 'worker0001', secrets: urlPasswords(url) });
      log.logger.error({ err: new Error(`cannot connect to ${url}`) }, `cannot use ${url}`);
      log.flush();
      const text = jsonlFiles(log.directory).map((file) => readFileSync(file, 'utf8')).join('');
      assert.ok(!text.includes(encodeURIComponent(password)), `the encoded password leaked:\n${text}`);
      assert.ok(!text.includes(password), `the password leaked:\n${text}`);
    },
  );
});
