/**
 * The worker's error taxonomy, as the original actor handles it:
 * - `JobLockConflict`: another worker holds the row; skip, no retry.
 * - `JobPreconditionError`: the job cannot run (bad id, wrong status); warn, skip, no retry.
 * - `EvolutionWorkerError`: the job ran and failed; rethrown so the queue's retry policy applies.
 * Anything else is unexpected: logged with its stack and rethrown.
 */

export class JobLockConflict extends Error {
  override readonly name = 'JobLockConflict';
}

export class JobPreconditionError extends Error {
  override readonly name = 'JobPreconditionError';
}

export class EvolutionWorkerError extends Error {
  override readonly name = 'EvolutionWorkerError';
  /** Output worth keeping with the failed job (agent or evaluator output). */
  readonly artifacts: Readonly<Record<string, string>>;
  constructor(message: string, options: { artifacts?: Record<string, string>; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.artifacts = options.artifacts ?? {};
  }
}

/** A drain ran past its timeout and cut the job short; the job goes back to the queue. */
export class JobHandedBack extends Error {
  override readonly name = 'JobHandedBack';
}

/**
 * The settings name something that cannot work (another experiment's repository, a root that
 * changed, a missing branch): restarting will not help, so the process exits with EXIT_CONFIG and
 * the supervisor stops everything instead of crash-looping.
 */
export class ConfigurationError extends Error {
  override readonly name = 'ConfigurationError';
}

/** A bad input from the user: printed as one line, exit 1, never a stack trace. */
export class UserError extends Error {
  override readonly name = 'UserError';
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
