import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { closeLaunchers, launcherUnavailable } from '../../src/shared/launcher.ts';
import { containedArgv, detectContainment, launcherFor, type Containment } from '../../src/shared/sandbox.ts';
import type { SandboxSettings } from '../../src/shared/settings/index.ts';
import { runCommand, type RunOptions } from '../../src/shared/subprocess.ts';
import { tempDir } from '../helpers/git.ts';
import { processesMentioning, waitFor } from '../helpers/processes.ts';

/**
 * The command launcher (src/shared/launcher.ts) against the same commands spawned directly: a
 * launcher runs one command after another, so each command's output, exit, input, arguments and
 * environment must be exactly its own, and nothing a command left behind may reach the next one.
 */

const settings = (overrides: Partial<SandboxSettings>): SandboxSettings => ({
  mode: 'none', required: false, network: false, writable: [], containment: 'auto', ...overrides,
});

// Launchers serve pid-namespace containment (launcherFor in src/shared/sandbox.ts).
const kinds: Array<{ name: string; containment: Containment | undefined; why?: string }> = [];
try {
  kinds.push({ name: 'pid-namespace', containment: detectContainment(settings({ containment: 'pid-namespace', required: true })) });
} catch (error) {
  kinds.push({ name: 'pid-namespace', containment: undefined, why: (error as Error).message });
}

after(() => closeLaunchers());

function findOnPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(path.join(dir, name)));
}

/** This process's children that are launchers (`unshare` around bash and the launcher's script). */
function launchers(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('--noprofile')) found.push(Number(entry));
    } catch {
      // Gone.
    }
  }
  return found;
}

for (const { name, containment, why } of kinds) {
  describe(`a ${name} launcher`, { skip: containment ? false : `not available here: ${why}` }, () => {
    const c = containment!;
    const root = tempDir('loreley-launcher-');
    const worktree = path.join(root, 'worktree');
    mkdirSync(worktree, { recursive: true });
    const scope = { cwd: worktree, writable: [worktree], readOnly: [], hidden: [], network: false };
    const run = (argv: string[], options: Partial<RunOptions> & { direct?: boolean } = {}) =>
      runCommand(argv, {
        cwd: worktree,
        timeoutMs: 20_000,
        killGraceMs: 500,
        ...options,
        wrap: (args) => containedArgv(c, args, scope),
        launcher: options.direct ? undefined : launcherFor(c),
      });

    test('works here (what a worker checks at start-up, to warn when every command is forked instead)', () => {
      assert.equal(launcherUnavailable(), undefined);
    });

    test('runs commands one after another, each with exactly its own output, exit, input, arguments and environment', async () => {
      closeLaunchers();
      await waitFor('the other launchers to be gone', () => launchers().length === 0, 5000);
      const tricky = [`it's "quoted"`, '$HOME `id` $(id) \\ ; | & * ?', 'new\nline', '', '-n', 'ünïcode ✓'];
      const env = { LORELEY_TEST_VALUE: `a 'b' "c" $d\nsecond line`, PATH: process.env.PATH };
      for (let round = 0; round < 3; round += 1) {
        const script = 'printf "%s\\n" "$@"; printf "err %s\\n" "$LORELEY_TEST_VALUE" >&2; cat; pwd; exit 7';
        const viaLauncher = await run(['bash', '-c', script, 'argv0', ...tricky], { input: `input ${round}\n`, env });
        const direct = await run(['bash', '-c', script, 'argv0', ...tricky], { input: `input ${round}\n`, env, direct: true });
        assert.equal(viaLauncher.exitCode, 7, viaLauncher.stderr);
        assert.equal(viaLauncher.signal, undefined);
        assert.equal(viaLauncher.stdout, `${tricky.join('\n')}\ninput ${round}\n${worktree}\n`);
        assert.equal(viaLauncher.stderr, `err ${env.LORELEY_TEST_VALUE}\n`);
        assert.deepEqual({ ...viaLauncher, durationMs: 0 }, { ...direct, durationMs: 0 });
      }
      // The environment a command sees is the one it is given, nothing of the launcher's (`_`, set by
      // any shell to the program's path, aside).
      const envOf = async (direct: boolean) => (await run(['env', '-0'], { env, direct })).stdout.split('\0').filter((line) => line !== '' && !line.startsWith('_=')).sort();
      assert.deepEqual(await envOf(false), await envOf(true));
      assert.equal(launchers().length, 1, 'one launcher ran every command');
    });

    test('a signal that killed the command is reported as one; no input is an empty stdin', async () => {
      const killed = await run(['bash', '-c', 'kill -TERM $$']);
      assert.equal(killed.exitCode, undefined);
      assert.equal(killed.signal, 'SIGTERM');
      const empty = await run(['bash', '-c', 'wc -c']);
      assert.equal(empty.stdout.trim(), '0');
    });

    test('what a command leaves behind is gone when it returns and never writes into the next one', async () => {
      const first = await run(['bash', '-c', '(while :; do echo leftover; done) & setsid bash -c "while :; do echo escaped; done" & echo first']);
      assert.equal(first.exitCode, 0);
      assert.match(first.stdout, /^first\n/m);
      const second = await run(['bash', '-c', 'sleep 0.2; echo second']);
      assert.equal(second.stdout, 'second\n');
      assert.equal(second.stderr, '');
    });

    test('output that looks like an end marker is output: the marker is drawn after the command is gone', async () => {
      const fake = 'x'.repeat(7) + '0123456789abcdef0123456789abcdef';
      for (const [stdout, stderr] of [[fake, ''], ['', fake], ['a', 'b'], ['', '']]) {
        const result = await run(['bash', '-c', 'printf "%s" "$1"; printf "%s" "$2" >&2', 'argv0', stdout, stderr]);
        assert.equal(result.stdout, stdout);
        assert.equal(result.stderr, stderr);
      }
    });

    test('a timeout or a cancellation ends the command and its launcher; the next command gets a new one', async () => {
      const marker = `600.${process.pid}${Math.floor(Math.random() * 1e6)}`;
      const controller = new AbortController();
      const flag = path.join(worktree, 'started.flag');
      const cancelled = run(['bash', '-c', `trap '' TERM; echo started; touch started.flag; sleep ${marker}`], { signal: controller.signal });
      await waitFor('the command to start', () => existsSync(flag), 10_000);
      controller.abort();
      const result = await cancelled;
      assert.equal(result.canceled, true);
      assert.match(result.stdout, /started/);
      await waitFor(`sleep ${marker} to be gone`, () => processesMentioning(`sleep ${marker}`).length === 0, 5000);
      const timedOut = await run(['bash', '-c', `trap '' TERM; sleep ${marker}`], { timeoutMs: 500 });
      assert.equal(timedOut.timedOut, true);
      await waitFor(`sleep ${marker} to be gone`, () => processesMentioning(`sleep ${marker}`).length === 0, 5000);
      const next = await run(['echo', 'next']);
      assert.equal(next.stdout, 'next\n');
    });

    test('a launcher holds no directory: it runs in /', () => {
      for (const pid of launchers()) assert.equal(readlinkSync(`/proc/${pid}/cwd`), '/');
    });

    test('a launcher that something traces (a command could have taken it over) is not used again', { skip: findOnPath('strace') ? false : 'strace is not installed' }, async () => {
      assert.equal((await run(['echo', 'one'])).stdout, 'one\n');
      const [launcher] = launchers();
      const init = Number(readFileSync(`/proc/${launcher}/task/${launcher}/children`, 'utf8').trim().split(' ')[0]);
      const tracer = spawn('strace', ['-p', String(init), '-o', '/dev/null'], { stdio: 'ignore' });
      try {
        await waitFor('strace to attach', () => /^TracerPid:\s+[1-9]/m.test(readFileSync(`/proc/${init}/status`, 'utf8')), 10_000);
        assert.equal((await run(['echo', 'two'])).stdout, 'two\n', 'the command itself still runs');
        await waitFor('the traced launcher to be closed', () => !launchers().includes(launcher), 5000);
        assert.equal((await run(['echo', 'three'])).stdout, 'three\n');
        assert.notDeepEqual(launchers(), [launcher], 'a new launcher ran the next command');
      } finally {
        tracer.kill('SIGKILL');
      }
    });

    test('a launcher killed while idle is replaced', async () => {
      assert.equal((await run(['echo', 'one'])).stdout, 'one\n');
      for (const pid of launchers()) process.kill(-pid, 'SIGKILL');
      await waitFor('the launchers to be gone', () => launchers().length === 0, 5000);
      assert.equal((await run(['echo', 'two'])).stdout, 'two\n');
    });
  });
}
