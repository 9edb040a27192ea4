import { PgBoss, type Db } from 'pg-boss';
import type { PoolClient } from './db/pool.ts';
import type { EvolutionJobMessage } from './queue-message.ts';
import type { Settings } from './settings/index.ts';

export { PgBoss } from 'pg-boss';

/**
 * The queue as the scheduler and the supervisor drive it, through pg-boss: how an evolution job's
 * queue job is sent, completed or cancelled, and what became of it (the message itself is
 * `queue-message.ts`; a worker runs pg-boss's statements itself, `queue-statements.ts`). The row
 * in `evolution_jobs` is the truth; the queue only says which row to run. Nothing outside this file knows pg-boss's states or output shapes.
 */

/**
 * Sends a queue job for `job` inside the caller's transaction, always with the job's priority, so
 * the queue job and the row's change commit together. Throws when the queue refuses it.
 */
export async function sendEvolutionJob(boss: PgBoss, queue: string, job: { readonly id: string; readonly priority: number }, client: PoolClient): Promise<string> {
  const message: EvolutionJobMessage = { jobId: job.id };
  const queueJobId = await boss.send(queue, message, { db: transactionDb(client), priority: job.priority });
  if (!queueJobId) throw new Error(`the queue ${queue} refused job ${job.id}`);
  return queueJobId;
}

/**
 * Stops the queue from running `queueJobId` (again): waiting, retrying or active, inside the
 * caller's transaction. A no-op on a settled queue job. Used when a job is handed back for a lost
 * worker (a cancel, unlike a failure, uses up no retry) and after a result is recorded.
 */
export async function cancelQueueJob(boss: PgBoss, queue: string, queueJobId: string, client: PoolClient): Promise<void> {
  await boss.cancel(queue, queueJobId, { db: transactionDb(client) });
}

/**
 * What became of a queue job: still `active` (waiting, retrying or running), `completed`,
 * `failed` (retries spent or expired), `cancelled`, or `missing` (never sent, or deleted).
 * `reason` says it in words, for the job's `last_error`.
 */
export type QueueJobFate =
  /** `lostWorker`: its worker is gone (the queue heartbeat lapsed): hand the job back, it did not fail. */
  | { readonly state: 'active'; readonly lostWorker?: string }
  | { readonly state: 'missing'; readonly reason: string }
  | { readonly state: 'failed'; readonly reason: string; readonly attempts: number; readonly lostWorker?: string }
  | { readonly state: 'cancelled'; readonly reason: string }
  | { readonly state: 'completed'; readonly reason: string };

export async function queueJobFate(boss: PgBoss, queue: string, queueJobId: string | null, options: { judgeHeartbeat?: boolean; now?: number } = {}): Promise<QueueJobFate> {
  const found = queueJobId ? (await boss.findJobs(queue, { id: queueJobId }))[0] : undefined;
  if (!found) return { state: 'missing', reason: `its queue job ${queueJobId ?? '(none)'} vanished from ${queue}` };
  const output = describeOutput(found.output);
  // pg-boss's own sweep fails a job whose heartbeat lapsed: its worker was lost, the job did not fail.
  const sweptForHeartbeat = output === HEARTBEAT_TIMEOUT;
  switch (found.state) {
    case 'failed': {
      const attempts = found.retryCount + 1;
      const reason = `the queue gave up on it (failed or expired after ${attempts} attempt(s))${output ? `: ${output}` : ''}`;
      return sweptForHeartbeat ? { state: 'failed', attempts, reason, lostWorker: `its worker stopped heartbeating (${output})` } : { state: 'failed', attempts, reason };
    }
    case 'retry':
      // Queued again by pg-boss after a lapsed heartbeat: hand it back ourselves, or the retry uses up an attempt.
      return sweptForHeartbeat ? { state: 'active', lostWorker: `its worker stopped heartbeating (${output})` } : { state: 'active' };
    case 'active': {
      if (!options.judgeHeartbeat || !found.heartbeatSeconds) return { state: 'active' };
      const beat = found.heartbeatOn ?? found.startedOn;
      const silentMs = (options.now ?? Date.now()) - new Date(beat).getTime();
      return silentMs > found.heartbeatSeconds * 1000
        ? { state: 'active', lostWorker: `its worker has not heartbeaten for ${Math.round(silentMs / 1000)} s (limit ${found.heartbeatSeconds} s)` }
        : { state: 'active' };
    }
    case 'cancelled':
      return { state: 'cancelled', reason: 'its queue job was cancelled' };
    case 'completed':
      return { state: 'completed', reason: 'its queue job completed' };
    default:
      return { state: 'active' };
  }
}

/** What pg-boss stores on a job its heartbeat sweep failed. */
const HEARTBEAT_TIMEOUT = 'job heartbeat timeout';

/** A failed handler's error is stored as the output; pg-boss's own expiry stores `{ value: { message } }`. */
function describeOutput(output: unknown): string {
  if (output === null || output === undefined) return '';
  const message = (value: unknown): string | undefined =>
    typeof value === 'object' && value !== null && typeof (value as { message?: unknown }).message === 'string' ? (value as { message: string }).message : undefined;
  const direct = message(output) ?? message((output as { value?: unknown }).value);
  if (direct) return direct;
  const text = JSON.stringify(output);
  return text === '{}' ? '' : text.slice(0, 500);
}

export interface BossOptions {
  readonly url: string;
  readonly settings: Settings;
  readonly applicationName: string;
  /** Run pg-boss maintenance and monitoring (expiry, heartbeats) from this process. */
  readonly supervise: boolean;
  /**
   * A side connection that only settles and sends jobs (the supervisor handing back a dead
   * child's job): one connection, no LISTEN, no migration.
   */
  readonly sideConnection?: boolean;
  /**
   * LISTEN for sent jobs (pg-boss's own listener, one connection): only a worker that fetches and
   * has nobody to wake it, i.e. a `loreley worker` run by hand. A supervised worker is woken by its
   * supervisor's one listener for the host (`src/supervisor/job-wake.ts`); a scheduler fetches
   * nothing. Every listening backend commits a transaction per NOTIFY it reads. Default: true
   * (false on a side connection).
   */
  readonly listen?: boolean;
}

/**
 * A pg-boss instance with a small pool. LISTEN/NOTIFY (when `listen`) wakes this process's idle
 * workers as soon as a job is sent instead of waiting for the next poll.
 */
export function createBoss(options: BossOptions): PgBoss {
  return new PgBoss({
    connectionString: options.url,
    schema: options.settings.database.bossSchema,
    max: options.sideConnection ? 1 : options.settings.database.poolMax,
    application_name: options.applicationName,
    useListenNotify: !options.sideConnection && options.listen !== false,
    supervise: options.supervise,
    schedule: false,
    migrate: !options.sideConnection,
    registerInstance: false,
  });
}

/** Creates or updates the experiment's queue and its dead-letter queue from settings. */
export async function ensureQueues(boss: PgBoss, settings: Settings): Promise<void> {
  const queue = settings.queue;
  const policy = {
    retryLimit: queue.maxRetries,
    retryDelay: queue.retryDelaySeconds,
    retryBackoff: queue.retryBackoff,
    expireInSeconds: queue.timeLimitSeconds,
    heartbeatSeconds: queue.heartbeatSeconds,
  };
  await createOrUpdate(boss, queue.deadLetterName, { retryLimit: 0 });
  await createOrUpdate(boss, queue.name, { ...policy, deadLetter: queue.deadLetterName, notify: true });
}

async function createOrUpdate(boss: PgBoss, name: string, options: Record<string, unknown>): Promise<void> {
  const existing = await boss.getQueue(name);
  if (existing) {
    const { notify: _notify, ...updatable } = options;
    await boss.updateQueue(name, updatable);
  } else {
    try {
      await boss.createQueue(name, options);
    } catch (error) {
      // Another process created it between our read and our create.
      if (!(await boss.getQueue(name))) throw error;
    }
  }
}

/** pg-boss's executor over a client already inside our transaction. */
function transactionDb(client: PoolClient): Db {
  return {
    async executeSql(text: string, values?: unknown[]) {
      const result = await client.query(text, values as unknown[]);
      return { rows: result.rows };
    },
  };
}
