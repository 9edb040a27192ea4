import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../shared/backoff.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { errorMessage } from '../shared/errors.ts';
import type { HeldJob } from '../shared/ipc.ts';
import type { Logger } from '../shared/logger.ts';
import { handBackLostJob } from '../shared/lost-jobs.ts';
import { upsertWorker } from '../shared/db/workers.ts';
import { createBoss, type PgBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';

/**
 * The supervisor's small database connection, used for two things: handing back the jobs of a
 * child that died with jobs in hand, the moment the supervisor sees it die (the child reported
 * them in its heartbeat), and recording slots that are dead (restarting) or errored in the
 * `workers` table, where `loreley status` shows them (a dead child cannot say so itself). Lazy:
 * nothing connects until a child dies, and then one connection and a pg-boss without workers or
 * maintenance are enough.
 *
 * While the database is away the hand-back is retried with backoff for a while; past that the
 * scheduler's reconciliation finds the job by its stale queue heartbeat and hands it back itself.
 */
export class SupervisorDatabase {
  private readonly url: string;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private connection: Promise<{ pool: Pool; boss: PgBoss }> | undefined;
  private readonly pending = new Set<Promise<void>>();
  private closed = false;
  /** How long to keep trying through an outage before leaving it to the scheduler. */
  private readonly giveUpAfterMs: number;

  constructor(options: { url: string; settings: Settings; logger: Logger; giveUpAfterMs?: number }) {
    this.url = options.url;
    this.settings = options.settings;
    this.logger = options.logger;
    this.giveUpAfterMs = options.giveUpAfterMs ?? 120_000;
  }

  private connect(): Promise<{ pool: Pool; boss: PgBoss }> {
    this.connection ??= (async () => {
      const pool = createPool({ url: this.url, settings: this.settings.database, applicationName: 'loreley-supervisor', max: 1 });
      const boss = createBoss({ url: this.url, settings: this.settings, applicationName: 'loreley-supervisor-queue', supervise: false, sideConnection: true });
      boss.on('error', (error) => this.logger.debug({ err: error }, 'supervisor queue connection error'));
      try {
        await boss.start();
      } catch (error) {
        this.connection = undefined;
        await pool.end().catch(() => undefined);
        throw error;
      }
      return { pool, boss };
    })();
    return this.connection;
  }

  /** Hands `jobs` back in the background; `close()` waits for what is under way. */
  handBack(slot: string, jobs: readonly HeldJob[], reason: string): void {
    for (const job of jobs) {
      const task = this.handBackOne(slot, job, reason).finally(() => this.pending.delete(task));
      this.pending.add(task);
    }
  }

  private async handBackOne(slot: string, job: HeldJob, reason: string): Promise<void> {
    const started = Date.now();
    const backoff = new Backoff();
    while (!this.closed) {
      try {
        const { pool, boss } = await this.connect();
        const done = await handBackLostJob(pool, boss, this.settings.queue.name, job, reason);
        if (done) this.logger.warn({ slot, jobId: job.jobId, queueJobId: job.queueJobId, ms: Date.now() - started }, `job ${job.jobId} handed back to the queue: ${reason}`);
        else this.logger.info({ slot, jobId: job.jobId, queueJobId: job.queueJobId }, 'the dead child\'s job had already finished or been handed back');
        return;
      } catch (error) {
        if (Date.now() - started > this.giveUpAfterMs) {
          this.logger.error({ slot, jobId: job.jobId, error: errorMessage(error) }, 'could not hand the dead child\'s job back; the scheduler will once its queue heartbeat is stale');
          return;
        }
        const delayMs = backoff.next();
        this.logger.warn({ slot, jobId: job.jobId, error: errorMessage(error), retryInMs: delayMs }, 'could not hand the dead child\'s job back yet');
        await sleep(delayMs);
      }
    }
  }

  /**
   * Records a slot's state as the supervisor sees it (`dead` while restarting, `errored` when given
   * up). `stillValid` is asked just before writing, so a late write never hides a restarted child.
   */
  recordSlot(slot: { workerId: string; role: string; pid: number; state: 'dead' | 'errored'; stillValid: () => boolean }): void {
    const task = (async () => {
      try {
        const { pool } = await this.connect();
        if (!slot.stillValid()) return;
        await upsertWorker(pool, {
          experimentId: this.settings.experiment.uuid,
          host: this.settings.hostId,
          workerId: slot.workerId,
          role: slot.role,
          pid: slot.pid,
          state: slot.state,
          currentJobId: null,
        });
      } catch (error) {
        this.logger.debug({ slot: slot.workerId, err: error }, 'could not record the slot state');
      }
    })().finally(() => this.pending.delete(task));
    this.pending.add(task);
  }

  /**
   * Waits for the hand-backs under way, each finishing its current try: while stopping, a
   * database that is down is not waited for (the scheduler's reconcile hands those jobs back).
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.pending);
    const connection = this.connection;
    this.connection = undefined;
    if (!connection) return;
    const { pool, boss } = await connection.catch(() => ({ pool: undefined, boss: undefined }));
    await boss?.stop({ graceful: false, close: true }).catch(() => undefined);
    await pool?.end().catch(() => undefined);
  }
}
