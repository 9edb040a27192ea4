import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EvolutionWorkerError } from '../shared/errors.ts';
import type { LauncherKind } from '../shared/launcher.ts';
import { containedArgv, PROCESS_GROUP_ONLY, type Containment } from '../shared/sandbox.ts';
import { storableText } from '../shared/storable.ts';
import { headAndTail, MAX_OUTPUT_BYTES, runCommand, tail, type RunResult } from '../shared/subprocess.ts';
import type { JobContext } from './agent.ts';
import type { JobWorktree } from './repository.ts';

/**
 * What the agent and evaluator commands share: the job context they are given (as a file, on
 * stdin and in the environment), and how a command that did not succeed fails the job.
 */

const OUTPUT_ARTIFACT_CHARS = 64 * 1024;

export function jobContextFile(worktree: JobWorktree): string {
  return path.join(worktree.metaDirectory, 'context.json');
}

/** Written once per job, beside the worktree; every command of the job reads the same file. */
export async function writeJobContext(worktree: JobWorktree, context: JobContext): Promise<void> {
  await writeFile(jobContextFile(worktree), `${JSON.stringify(context, null, 2)}\n`);
}

/** Environment every command the worker runs gets, so scripts need not parse stdin. */
export function jobEnvironment(context: JobContext, worktree: JobWorktree, promptFile?: string): Record<string, string> {
  return {
    LORELEY_JOB_ID: context.jobId,
    LORELEY_EXPERIMENT_ID: context.experimentId,
    LORELEY_BASE_COMMIT: context.baseCommit,
    LORELEY_WORKTREE: context.worktree,
    LORELEY_JOB_CONTEXT: jobContextFile(worktree),
    ...(promptFile ? { LORELEY_PROMPT_FILE: promptFile } : {}),
  };
}

/**
 * How every command of this worker is contained, set once at start-up (src/worker/containment.ts):
 * the mechanism, and what the sandbox lets commands write, keeps read-only and hides.
 */
export interface CommandPolicy {
  readonly containment: Containment;
  /** Where commands start from instead of a fork of the worker (WORKER_COMMAND_LAUNCHER); undefined: spawned directly. */
  readonly launcher?: LauncherKind;
  readonly network: boolean;
  readonly writable: readonly string[];
  readonly readOnly: readonly string[];
  readonly hidden: readonly string[];
}

let policy: CommandPolicy = { containment: PROCESS_GROUP_ONLY, network: true, writable: [], readOnly: [], hidden: [] };

export function setCommandPolicy(next: CommandPolicy): void {
  policy = next;
}

const MIB = 1024 * 1024;

export interface JobCommand {
  /** Names the command in errors, e.g. `evaluator "node"`. */
  readonly label: string;
  readonly argv: readonly string[];
  readonly timeoutSeconds: number;
  /** Kind of the artifact its output is kept as. */
  readonly artifact: string;
  /** Needs the network whatever WORKER_SANDBOX_NETWORK says (a coding-agent CLI calls its API). */
  readonly network?: boolean;
  /** More directories it may write in the sandbox (a CLI's own state under HOME). */
  readonly writable?: readonly string[];
}

/**
 * Runs a job's command in the worktree. Resolves with its result and output artifacts when it
 * exits 0; otherwise fails the job with an `EvolutionWorkerError` saying why, output attached.
 */
export async function runJobCommand(
  command: JobCommand,
  options: { worktree: JobWorktree; env: Record<string, string>; input: string; signal: AbortSignal; artifacts?: Record<string, string> },
): Promise<{ result: RunResult; artifacts: Record<string, string> }> {
  const { worktree } = options;
  // The job's own temporary directory, beside the worktree: in the sandbox the rest of the
  // filesystem (/tmp included) is read-only.
  const tmp = path.join(worktree.metaDirectory, 'tmp');
  await mkdir(tmp, { recursive: true });
  const scope = {
    cwd: worktree.directory,
    writable: [worktree.directory, worktree.metaDirectory, ...policy.writable, ...(command.writable ?? [])],
    readOnly: policy.readOnly,
    hidden: policy.hidden,
    network: policy.network || command.network === true,
  };
  const result = await runCommand(command.argv, {
    cwd: worktree.directory,
    env: { TMPDIR: tmp, ...options.env },
    input: options.input,
    timeoutMs: command.timeoutSeconds * 1000,
    signal: options.signal,
    maxOutputBytes: MAX_OUTPUT_BYTES,
    wrap: (argv) => containedArgv(policy.containment, argv, scope),
    launcher: policy.launcher,
  });
  const output = headAndTail(`${result.stdout}${result.stderr ? `\n[stderr]\n${result.stderr}` : ''}`, OUTPUT_ARTIFACT_CHARS);
  const artifacts = { [command.artifact]: output, ...options.artifacts };
  const fail = (why: string): never => {
    // The message goes into last_error and the queue's job output: no NUL, no secret.
    throw new EvolutionWorkerError(storableText(`${command.label} ${why}`), { artifacts });
  };
  if (result.failedToStart) fail(`could not start: ${result.failedToStart}`);
  if (result.outputOverLimit) {
    fail(`output over ${MAX_OUTPUT_BYTES / MIB} MiB (${result.outputBytes} bytes read before it was stopped; its first and last part are kept)`);
  }
  if (result.canceled) fail('was cancelled');
  if (result.timedOut) fail(`timed out after ${command.timeoutSeconds}s`);
  if (result.exitCode !== 0) {
    fail(`${result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`}: ${tail(result.stderr || result.stdout, 300).trim()}`);
  }
  return { result, artifacts };
}
