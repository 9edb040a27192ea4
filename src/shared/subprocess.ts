import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { launch, type LauncherKind } from './launcher.ts';

/**
 * Runs an agent or evaluator command: an argument list, never a shell, in its own process group so
 * a timeout, a cancellation or this process exiting takes the whole tree down with it. What keeps
 * processes that leave the group (a PID namespace, a sandbox) is the caller's `wrap`.
 */

export interface RunOptions {
  readonly cwd: string;
  readonly env?: Record<string, string | undefined>;
  readonly input?: string;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** How long a command has after SIGTERM before SIGKILL. */
  readonly killGraceMs?: number;
  /** Output (stdout and stderr together) past which the command is stopped; MAX_OUTPUT_BYTES by default. */
  readonly maxOutputBytes?: number;
  /** Wraps the argument list, e.g. in a PID namespace or a sandbox (src/shared/sandbox.ts). */
  readonly wrap?: (argv: readonly string[]) => readonly string[];
  /**
   * Start it from a small long-lived launcher (src/shared/launcher.ts) rather than a fork of this
   * process, which costs more the bigger this process is. The launcher is the command's PID
   * namespace, so `wrap` is not applied there; where no launcher can take the command, it is
   * spawned directly, wrapped.
   */
  readonly launcher?: LauncherKind;
}

export interface RunResult {
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly canceled: boolean;
  readonly failedToStart: string | undefined;
  /** It printed more than the cap: it was stopped, and only the head and tail of its output kept. */
  readonly outputOverLimit: boolean;
  readonly outputBytes: number;
  readonly durationMs: number;
}

const liveGroups = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers run on process.exit() and normal ends; a worker's signal handlers exit through it.
  process.on('exit', () => {
    for (const pid of liveGroups) killGroup(pid, 'SIGKILL');
  });
}

/** Kills every command still running; used when a process must stop at once. */
export function killAllCommands(): void {
  for (const pid of liveGroups) killGroup(pid, 'SIGKILL');
}

/** Process groups of the commands running now, so a supervisor can end them if we are killed. */
export function liveCommandGroups(): number[] {
  return [...liveGroups];
}

const groupListeners = new Set<(groups: number[]) => void>();

/** Called whenever a command starts or ends. */
export function onCommandGroupsChange(listener: (groups: number[]) => void): () => void {
  groupListeners.add(listener);
  return () => groupListeners.delete(listener);
}

function groupsChanged(): void {
  for (const listener of groupListeners) listener(liveCommandGroups());
}

/**
 * What a command may see of this process's environment. It runs code a model wrote: it gets no
 * database credentials and no API keys unless the caller passes them on purpose.
 */
const WITHHELD = /^(DATABASE_URL|PG[A-Z]*|OPENAI_API_KEY|ANTHROPIC_API_KEY|LORELEY_TEST_DATABASE_URL|NODE_CHANNEL_FD|NODE_UNIQUE_ID)$/;

export function commandEnvironment(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !WITHHELD.test(key)) env[key] = value;
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

/** Output kept in memory at most, stdout and stderr together; past it the command is stopped. */
export const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Past the cap, the first and the last this many bytes of each stream are kept. */
const KEPT_WHEN_OVER = 64 * 1024;
/**
 * After the command exits, how long its pipes may stay open before they are closed on our side.
 * A process it left behind (outside the PID namespace: a `setsid` daemon) may hold them forever;
 * waiting for them is how a timeout used not to end a job.
 */
const PIPE_DRAIN_MS = 250;

/** One output stream: everything while under the cap, then only its head and its tail. */
class CapturedStream {
  private chunks: Buffer[] = [];
  private head: Buffer | undefined;
  private tailPart = Buffer.alloc(0);
  private omitted = 0;

  add(chunk: Buffer, overCap: boolean): void {
    if (this.head === undefined && !overCap) {
      this.chunks.push(chunk);
      return;
    }
    if (this.head === undefined) {
      const all = Buffer.concat(this.chunks);
      this.chunks = [];
      this.head = Buffer.from(all.subarray(0, KEPT_WHEN_OVER));
      this.tailPart = all.subarray(this.head.length);
    }
    const tail = Buffer.concat([this.tailPart, chunk]);
    const excess = Math.max(0, tail.length - KEPT_WHEN_OVER);
    this.omitted += excess;
    this.tailPart = Buffer.from(tail.subarray(excess));
  }

  text(): string {
    if (this.head === undefined) return Buffer.concat(this.chunks).toString('utf8');
    const omitted = this.omitted > 0 ? `\n[… ${this.omitted} bytes omitted …]\n` : '';
    return `${this.head.toString('utf8')}${omitted}${this.tailPart.toString('utf8')}`;
  }
}

/** Whether `command` can be started: a path that exists, or a name found on PATH. */
function findExecutable(command: string, cwd: string, env: Record<string, string>): boolean {
  const executable = (file: string) => {
    try {
      accessSync(file, constants.X_OK);
      return statSync(file).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes('/')) return executable(path.resolve(cwd, command));
  return (env.PATH ?? '').split(':').some((dir) => dir !== '' && executable(path.join(dir, command)));
}

/**
 * Runs a command to its end, and ends it when it must: on timeout, cancellation or output past the
 * cap, TERM to its process group, then KILL after the grace. The result is returned once the
 * command itself has exited, without waiting for pipes that something it left behind holds open.
 *
 * Not execa: its timeout and `forceKillAfterDelay` signal only the direct child, and its result
 * waits for stdout and stderr to end, so a grandchild holding stdout keeps it pending for good.
 */
export async function runCommand(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  installExitHook();
  const started = performance.now();
  const env = commandEnvironment(options.env);
  const maxOutputBytes = options.maxOutputBytes ?? MAX_OUTPUT_BYTES;
  const elapsed = () => performance.now() - started;
  const notStarted = (why: string): RunResult => ({
    exitCode: undefined, signal: undefined, stdout: '', stderr: '', timedOut: false, canceled: false,
    failedToStart: why, outputOverLimit: false, outputBytes: 0, durationMs: elapsed(),
  });
  if (!findExecutable(argv[0], options.cwd, env)) return notStarted(`${argv[0]}: command not found (ENOENT)`);
  if (options.signal?.aborted) return { ...notStarted('cancelled before it started'), failedToStart: undefined, canceled: true };

  const spawned = options.wrap ? options.wrap(argv) : argv;
  const stdout = new CapturedStream();
  const stderr = new CapturedStream();
  let outputBytes = 0;
  let outputOverLimit = false;
  let terminate = () => undefined as void;
  const collect = (stream: CapturedStream) => (chunk: Buffer) => {
    outputBytes += chunk.length;
    const over = outputBytes > maxOutputBytes;
    stream.add(chunk, over);
    if (over && !outputOverLimit) {
      outputOverLimit = true;
      terminate();
    }
  };

  let command: Started;
  const launcher = options.launcher;
  const launched = launcher && existsSync(options.cwd)
    ? await launch(launcher, { argv, cwd: options.cwd, env, input: options.input ?? '' }, collect(stdout), collect(stderr))
    : undefined;
  // Its group is the launcher's, known now: reported before the command can have started.
  if (launched) {
    liveGroups.add(launched.group);
    groupsChanged();
  }
  const forked = await launched?.started.then(() => true, () => false);
  if (launched && !forked) liveGroups.delete(launched.group);
  if (launched && forked) {
    // What it leaves behind is the launcher's to end (it does, or dies with it).
    command = { pid: launched.group, exited: launched.exited, outputEnded: launched.outputEnded, leftovers: () => undefined, finish: () => launched.release() };
  } else {
    // No launcher, or one that died before it forked the command (with the command, had it started).
    launched?.release();
    command = spawnDirect(spawned, options, env, collect(stdout), collect(stderr));
  }
  const { pid } = command;
  if (pid !== undefined && !liveGroups.has(pid)) {
    liveGroups.add(pid);
    groupsChanged();
  }

  let timedOut = false;
  let canceled = false;
  let killTimer: NodeJS.Timeout | undefined;
  terminate = () => {
    if (pid === undefined || killTimer !== undefined) return;
    killGroup(pid, 'SIGTERM');
    killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), options.killGraceMs ?? 2000);
  };
  if (outputOverLimit) terminate();

  const onAbort = () => {
    canceled = true;
    terminate();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  const timer = setTimeout(() => {
    timedOut = true;
    terminate();
  }, options.timeoutMs);

  try {
    const exit = await command.exited;
    if (exit instanceof Error) return notStarted(exit.message);
    // Whatever it left behind goes now; then its pipes get a moment to deliver the rest.
    command.leftovers();
    await Promise.race([command.outputEnded, sleep(PIPE_DRAIN_MS, undefined, { ref: false })]);
    command.finish();
    return {
      exitCode: exit.code ?? undefined,
      signal: exit.signal ?? undefined,
      stdout: stdout.text(),
      stderr: stderr.text(),
      timedOut,
      canceled,
      failedToStart: undefined,
      outputOverLimit,
      outputBytes,
      durationMs: elapsed(),
    };
  } finally {
    clearTimeout(timer);
    clearTimeout(killTimer);
    command.leftovers();
    command.finish();
    options.signal?.removeEventListener('abort', onAbort);
    if (pid !== undefined) {
      liveGroups.delete(pid);
      groupsChanged();
    }
  }
}

/** A started command, however it was started. */
interface Started {
  /** Its process group. */
  readonly pid: number | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null } | Error>;
  /** Its output has all been read. */
  readonly outputEnded: Promise<unknown>;
  /** Ends what it left behind in its process group. */
  leftovers(): void;
  /** Lets go of its pipes (or its launcher); called once the result is taken, and again in any case. */
  finish(): void;
}

/** A child of this process, in a process group of its own. */
function spawnDirect(argv: readonly string[], options: RunOptions, env: Record<string, string>, onStdout: (chunk: Buffer) => void, onStderr: (chunk: Buffer) => void): Started {
  const child = spawn(argv[0], argv.slice(1), { cwd: options.cwd, env, detached: true, stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
  child.stdout.on('data', onStdout);
  child.stderr.on('data', onStderr);
  // A command that exits without reading its input closes the pipe under us: not our error.
  child.stdin.on('error', () => undefined);
  child.stdin.end(options.input ?? '');
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null } | Error>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      if (child.pid === undefined) resolve(error);
    });
  });
  return {
    pid: child.pid,
    exited,
    outputEnded: Promise.all([once(child.stdout, 'close'), once(child.stderr, 'close')]).catch(() => undefined),
    leftovers: () => {
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    },
    finish: () => {
      child.stdout.destroy();
      child.stderr.destroy();
    },
  };
}

/** The last part of a command's output, for error messages and artifacts. */
export function tail(text: string, maxChars = 2000): string {
  return text.length <= maxChars ? text : `…${text.slice(-maxChars)}`;
}

/** The first and the last part of a long text, saying how much is left out between them. */
export function headAndTail(text: string, maxChars: number): string {
  if (text.length <= maxChars) return text;
  const half = Math.floor(maxChars / 2);
  return `${text.slice(0, half)}\n[… ${text.length - 2 * half} characters omitted …]\n${text.slice(-half)}`;
}
