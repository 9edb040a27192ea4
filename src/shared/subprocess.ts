import { execa } from 'execa';

/**
 * Runs an agent or evaluator command: an argument list, never a shell, in its own process group so
 * a timeout, a cancellation or this process exiting takes the whole tree down with it.
 */

export interface RunOptions {
  readonly cwd: string;
  readonly env?: Record<string, string | undefined>;
  readonly input?: string;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** How long a command has after SIGTERM before SIGKILL. */
  readonly killGraceMs?: number;
}

export interface RunResult {
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly canceled: boolean;
  readonly failedToStart: string | undefined;
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

const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export async function runCommand(argv: readonly string[], options: RunOptions): Promise<RunResult> {
  installExitHook();
  const [file, ...args] = argv;
  const started = performance.now();
  const subprocess = execa(file, args, {
    cwd: options.cwd,
    env: commandEnvironment(options.env),
    extendEnv: false,
    input: options.input ?? '',
    timeout: options.timeoutMs,
    cancelSignal: options.signal,
    forceKillAfterDelay: options.killGraceMs ?? 2000,
    detached: true,
    reject: false,
    stripFinalNewline: false,
    maxBuffer: MAX_OUTPUT_BYTES,
    windowsHide: true,
  });
  const pid = subprocess.pid;
  if (pid !== undefined) {
    liveGroups.add(pid);
    groupsChanged();
  }
  // execa stops the direct child; what it started (a shell's children, a test runner's workers)
  // lives on in the group unless the group goes too.
  const stopGroup = () => {
    if (pid !== undefined) killGroup(pid, 'SIGTERM');
  };
  options.signal?.addEventListener('abort', stopGroup, { once: true });
  const timer = setTimeout(stopGroup, options.timeoutMs);
  try {
    const result = await subprocess;
    return {
      exitCode: result.exitCode,
      signal: result.signal,
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      timedOut: result.timedOut,
      canceled: result.isCanceled,
      failedToStart: result.failed && result.exitCode === undefined && !result.timedOut && !result.isCanceled && result.signal === undefined
        ? result.shortMessage
        : undefined,
      durationMs: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', stopGroup);
    if (pid !== undefined) {
      killGroup(pid, 'SIGKILL');
      liveGroups.delete(pid);
      groupsChanged();
    }
  }
}

/** The last part of a command's output, for error messages and artifacts. */
export function tail(text: string, maxChars = 2000): string {
  return text.length <= maxChars ? text : `…${text.slice(-maxChars)}`;
}
