import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EvolutionWorkerError } from '../shared/errors.ts';
import { runCommand, tail, type RunResult } from '../shared/subprocess.ts';
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

export interface JobCommand {
  /** Names the command in errors, e.g. `evaluator "node"`. */
  readonly label: string;
  readonly argv: readonly string[];
  readonly timeoutSeconds: number;
  /** Kind of the artifact its output is kept as. */
  readonly artifact: string;
}

/**
 * Runs a job's command in the worktree. Resolves with its result and output artifacts when it
 * exits 0; otherwise fails the job with an `EvolutionWorkerError` saying why, output attached.
 */
export async function runJobCommand(
  command: JobCommand,
  options: { worktree: JobWorktree; env: Record<string, string>; input: string; signal: AbortSignal; artifacts?: Record<string, string> },
): Promise<{ result: RunResult; artifacts: Record<string, string> }> {
  const result = await runCommand(command.argv, {
    cwd: options.worktree.directory,
    env: options.env,
    input: options.input,
    timeoutMs: command.timeoutSeconds * 1000,
    signal: options.signal,
  });
  const output = tail(`${result.stdout}${result.stderr ? `\n[stderr]\n${result.stderr}` : ''}`, OUTPUT_ARTIFACT_CHARS);
  const artifacts = { [command.artifact]: output, ...options.artifacts };
  const fail = (why: string): never => {
    throw new EvolutionWorkerError(`${command.label} ${why}`, { artifacts });
  };
  if (result.failedToStart) fail(`could not start: ${result.failedToStart}`);
  if (result.canceled) fail('was cancelled');
  if (result.timedOut) fail(`timed out after ${command.timeoutSeconds}s`);
  if (result.exitCode !== 0) {
    fail(`${result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`}: ${tail(result.stderr || result.stdout, 300).trim()}`);
  }
  return { result, artifacts };
}
