import path from 'node:path';
import type { EnvReader } from './reader.ts';

export interface SchedulerSettings {
  /** A clone the scheduler reads commits from; unset means `<WORKER_REPO_WORKTREE>-scheduler`. */
  readonly repoRoot: string | undefined;
  readonly pollIntervalSeconds: number;
  readonly maxUnfinishedJobs: number;
  readonly scheduleBatchSize: number;
  readonly dispatchBatchSize: number;
  readonly ingestBatchSize: number;
  /** The experiment's job budget (evolution jobs, not the baseline); unset means unbounded. */
  readonly maxTotalJobs: number | undefined;
  /** The goal every job carries to the agent; unset leaves it to the agent's own prompt. */
  readonly goal: string | undefined;
  /** How often a job whose queue job vanished is sent again before it is marked failed. */
  readonly maxResends: number;
  /** How often a standby scheduler tries to take the experiment's lock. */
  readonly lockPollSeconds: number;
  /** Priority of the root's baseline evaluation job; evolution jobs have priority 0. */
  readonly baselinePriority: number;
  /** The circuit breaker: this many finished jobs in a row failing for one systemic reason stop the run; 0 turns it off. */
  readonly maxConsecutiveFailures: number;
  /** Commits read at once ahead of ingestion (p-limit). */
  readonly ingestConcurrency: number;
}

export function readSchedulerSettings(reader: EnvReader, cwd: string): SchedulerSettings {
  const repoRoot = reader.optionalString('SCHEDULER_REPO_ROOT');
  return {
    repoRoot: repoRoot === undefined ? undefined : path.resolve(cwd, repoRoot),
    pollIntervalSeconds: reader.float('SCHEDULER_POLL_INTERVAL_SECONDS', 30, { min: 0.05 }),
    maxUnfinishedJobs: reader.int('SCHEDULER_MAX_UNFINISHED_JOBS', 8, { min: 1 }),
    scheduleBatchSize: reader.int('SCHEDULER_SCHEDULE_BATCH_SIZE', 4, { min: 1 }),
    dispatchBatchSize: reader.int('SCHEDULER_DISPATCH_BATCH_SIZE', 8, { min: 1 }),
    ingestBatchSize: reader.int('SCHEDULER_INGEST_BATCH_SIZE', 16, { min: 1 }),
    maxTotalJobs: reader.optionalInt('SCHEDULER_MAX_TOTAL_JOBS', { min: 0 }),
    goal: reader.optionalString('SCHEDULER_GOAL'),
    maxResends: reader.int('SCHEDULER_MAX_RESENDS', 2, { min: 0 }),
    lockPollSeconds: reader.float('SCHEDULER_LOCK_POLL_SECONDS', 5, { min: 0.05 }),
    baselinePriority: reader.int('SCHEDULER_BASELINE_PRIORITY', 100, { min: 1 }),
    maxConsecutiveFailures: reader.int('SCHEDULER_MAX_CONSECUTIVE_FAILURES', 5, { min: 0 }),
    ingestConcurrency: reader.int('SCHEDULER_INGEST_CONCURRENCY', 4, { min: 1, max: 64 }),
  };
}
