import path from 'node:path';
import type { EnvReader } from './reader.ts';

export interface SchedulerSettings {
  /** A clone the scheduler reads commits from; defaults to the worker base clone path. */
  readonly repoRoot: string | undefined;
  readonly pollIntervalSeconds: number;
  readonly maxUnfinishedJobs: number;
  readonly scheduleBatchSize: number;
  readonly dispatchBatchSize: number;
  readonly ingestBatchSize: number;
  /** The experiment's job budget; unset means unbounded. */
  readonly maxTotalJobs: number | undefined;
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
  };
}
