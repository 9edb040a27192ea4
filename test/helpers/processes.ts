import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/**
 * Real Loreley processes for tests: spawned in a process group of their own with a controlled
 * environment, their output captured, and killed (the whole group) when a test is done.
 */

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const NODE = path.join(ROOT, 'node_modules', '.bin', 'node');
export const SUPERVISOR_BIN = path.join(ROOT, 'bin', 'loreley-supervisor.js');
export const LORELEY_BIN = path.join(ROOT, 'bin', 'loreley.js');

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Spawned {
  readonly child: ChildProcess;
  readonly pid: number;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<Exit>;
  /** Resolves with the exit, or rejects after `timeoutMs` with the captured output. */
  waitExit(timeoutMs: number): Promise<Exit>;
  /** Kills the whole process group (the process and everything it forked into the group). */
  killGroup(signal?: NodeJS.Signals): void;
}

const live = new Set<Spawned>();

/** A minimal environment: nothing inherited but PATH and HOME, so no stray setting leaks in. */
export function baseEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' };
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

export function spawnNode(args: readonly string[], options: { env: Record<string, string>; cwd: string }): Spawned {
  const child = spawn(NODE, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const spawned: Spawned = {
    child,
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited,
    async waitExit(timeoutMs) {
      const result = await Promise.race([exited, sleep(timeoutMs, undefined, { ref: false })]);
      if (!result) {
        throw new Error(`process ${args.join(' ')} did not exit within ${timeoutMs} ms\n--- stderr (tail) ---\n${err.slice(-4000)}`);
      }
      return result;
    },
    killGroup(signal = 'SIGKILL') {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // Already gone.
      }
    },
  };
  live.add(spawned);
  void exited.then(() => live.delete(spawned));
  return spawned;
}

/** SIGKILLs every process group a test spawned and did not see exit. For after() hooks. */
export function killAllSpawned(): void {
  for (const spawned of live) spawned.killGroup('SIGKILL');
  // The group leader may have exited while children of its group live on.
  for (const spawned of live) live.delete(spawned);
}

export function spawnSupervisor(args: readonly string[], options: { env: Record<string, string>; cwd: string }): Spawned {
  return spawnNode([SUPERVISOR_BIN, ...args], options);
}

export function spawnLoreley(args: readonly string[], options: { env: Record<string, string>; cwd: string }): Spawned {
  return spawnNode([LORELEY_BIN, ...args], options);
}

/**
 * Polls `probe` until it returns something truthy; fails with `what` after `timeoutMs`, or at once
 * when `watch` (the process expected to make it happen) has exited.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 20_000,
  intervalMs = 50,
  watch?: Spawned,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    if (watch && (watch.child.exitCode !== null || watch.child.signalCode !== null)) {
      throw new Error(`waiting for ${what}: the process exited (${watch.child.exitCode ?? watch.child.signalCode})\n--- stderr (tail) ---\n${watch.stderr().slice(-4000)}`);
    }
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** True while `pid` is a running process; a zombie (dead, not yet reaped by its new parent) is not. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** A pid that belonged to a process that has exited. */
export async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

/** Processes whose command line mentions `needle` (reads /proc). */
export function processesMentioning(needle: string): Array<{ pid: number; cmdline: string }> {
  const found: Array<{ pid: number; cmdline: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmdline.includes(needle)) found.push({ pid: Number(name), cmdline });
    } catch {
      // Exited while we looked.
    }
  }
  return found;
}

export interface LogLine {
  readonly time: string;
  readonly level: string;
  readonly msg: string;
  readonly workerId: string;
  readonly role: string;
  readonly pid: number;
  readonly host: string;
  readonly jobId?: string;
  readonly [key: string]: unknown;
}

/** Every `.jsonl` file under `directory`, recursively. */
export function jsonlFiles(directory: string): string[] {
  return allFiles(directory).filter((file) => file.endsWith('.jsonl')).sort();
}

/** Every parsed line of every JSONL file of one process's log directory, in file order. */
export function readLog(directory: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const file of jsonlFiles(directory)) {
    for (const text of readFileSync(file, 'utf8').split('\n')) {
      if (text.trim() === '') continue;
      lines.push(JSON.parse(text) as LogLine);
    }
  }
  return lines;
}

/** Every file under `directory`, recursively. */
export function allFiles(directory: string): string[] {
  if (!existsSync(directory)) return [];
  const files: string[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) files.push(...allFiles(full));
    else files.push(full);
  }
  return files;
}
