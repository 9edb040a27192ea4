import { JobPreconditionError } from './errors.ts';
import { isUuid } from './experiment.ts';

/**
 * What an evolution job's queue message carries and how a worker reads it. Apart from the queue
 * itself (`queue.ts` drives pg-boss, `queue-statements.ts` runs its statements in a worker), so
 * either side can read a message without loading the other.
 */

/** The message a queue job carries: only the id of its `evolution_jobs` row. */
export interface EvolutionJobMessage {
  readonly jobId: string;
}

/** A queue job as a worker holds it (pg-boss's job with metadata): its id, attempt, priority and message. */
export interface QueueJob {
  readonly id: string;
  /** pg-boss's attempt counter: a settle fenced to it cannot touch a later attempt of the same job. */
  readonly retryCount: number;
  readonly retryLimit: number;
  readonly priority: number;
  readonly data: unknown;
}

/** Reads a queue message; throws `JobPreconditionError` (skip, no retry) when it names no valid job. */
export function parseEvolutionJobMessage(data: unknown): EvolutionJobMessage {
  const jobId = typeof data === 'object' && data !== null ? (data as { jobId?: unknown }).jobId : undefined;
  if (typeof jobId !== 'string' || !isUuid(jobId.trim())) {
    throw new JobPreconditionError(`queue message has no valid job id (expected a UUID, got ${JSON.stringify(jobId) ?? 'nothing'})`);
  }
  return { jobId: jobId.trim().toLowerCase() };
}

/**
 * The job id a message names, as written, for logs and the worker's state before the job is
 * claimed; null when it names none. Not validated: a bad id shows in the log as it arrived, and
 * `parseEvolutionJobMessage` then rejects it.
 */
export function messageJobId(data: unknown): string | null {
  const jobId = typeof data === 'object' && data !== null ? (data as { jobId?: unknown }).jobId : undefined;
  return typeof jobId === 'string' ? jobId : null;
}
