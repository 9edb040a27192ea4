import type { Pool } from '../shared/db/pool.ts';
import type { FetchedJob, QueueStatements } from '../shared/queue-statements.ts';

/**
 * What pg-boss's worker loop does for a queue job while its handler runs, for a job the worker
 * fetched itself (`manager.js`, `#processJobs`):
 * - the heartbeat: with `heartbeatSeconds`, the claim is touched every half of it (fenced to the
 *   attempt); a touch that finds the attempt gone (the sweep failed it, another worker took it)
 *   aborts the job, whose result could no longer land;
 * - the time limit: past `expireInSeconds` the job is aborted and its attempt failed at once,
 *   with pg-boss's message, so the queue's retry policy applies even to a handler that does not
 *   stop (it keeps the slot until it does).
 * A touch that cannot run (the database away) says nothing about the claim and aborts nothing.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface HeldClaimOptions {
  readonly pool: Pool;
  readonly queue: QueueStatements;
  readonly job: FetchedJob;
  /** Ends the job's work with `reason`. */
  readonly abort: (reason: Error) => void;
  readonly onError: (error: unknown) => void;
}

export class HeldClaim {
  private readonly options: HeldClaimOptions;
  private readonly heartbeat: NodeJS.Timeout | undefined;
  private readonly limit: NodeJS.Timeout | undefined;
  private released = false;

  constructor(options: HeldClaimOptions) {
    this.options = options;
    const { job } = options;
    if (job.heartbeatSeconds) this.heartbeat = setInterval(() => void this.touch(), (job.heartbeatSeconds / 2) * 1000);
    // pg-boss waits at least a second (resolveWithinSeconds). A timer cannot wait longer than
    // 2^31 - 1 ms (~24.8 days; Node would fire it at once): a longer limit is left to pg-boss's
    // own expiry sweep, as the scheduler runs it.
    const seconds = Math.max(1, job.expireInSeconds);
    this.limit = seconds * 1000 <= MAX_TIMER_MS ? setTimeout(() => void this.expire(seconds), seconds * 1000) : undefined;
  }

  /** The job ended: no more touches, no time limit. */
  release(): void {
    this.released = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.limit);
  }

  private async touch(): Promise<void> {
    const { pool, queue, job } = this.options;
    let held: Set<string>;
    try {
      held = await queue.touch(pool, [job]);
    } catch (error) {
      this.options.onError(error);
      return;
    }
    if (this.released || held.has(job.id)) return;
    clearInterval(this.heartbeat);
    this.options.abort(new Error(`job ${job.id} is no longer active under this worker's claim`));
  }

  private async expire(seconds: number): Promise<void> {
    const { pool, queue, job } = this.options;
    clearInterval(this.heartbeat);
    const reason = new Error(`handler execution exceeded ${seconds}s`);
    this.options.abort(reason);
    try {
      await queue.fail(pool, job, reason);
    } catch (error) {
      this.options.onError(error);
    }
  }
}
