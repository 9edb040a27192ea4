import { jobBranchName } from '../shared/experiment.ts';
import { observeJobDone, observeJobPickup } from '../shared/metrics.ts';
import { claimJob, handBack, lockJob, markSucceededUnfinished, recordFailure, requeueUnstarted, type ClaimResult, type EvolutionJob } from '../shared/db/jobs.ts';
import { withTransaction, type Pool, type PoolClient } from '../shared/db/pool.ts';
import { putArtifact, recordSucceededAttempt, upsertCommitCard, upsertMetrics, type CommitCard } from '../shared/db/results.ts';
import { upsertWorker, type WorkerPresence } from '../shared/db/workers.ts';
import {
  errorMessage,
  EvolutionWorkerError,
  JobHandedBack,
  JobLockConflict,
  JobPreconditionError,
} from '../shared/errors.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../shared/backoff.ts';
import { isDatabaseUnavailable } from '../shared/db-availability.ts';
import { commitAll, pushBranch } from '../shared/git.ts';
import type { Logger } from '../shared/logger.ts';
import { parseEvolutionJobMessage, type QueueJob } from '../shared/queue-message.ts';
import type { FetchedJob, QueueStatements } from '../shared/queue-statements.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { JobContext, MutationAgent } from './agent.ts';
import { evaluate } from './evaluator.ts';
import { writeJobContext } from './job-command.ts';
import type { JobWorktree, WorkerRepository } from './repository.ts';
import { ResultSpool, ResultSpooled, type SpooledResult } from './spool.ts';

export interface JobOutcome {
  readonly jobId: string;
  readonly commit: string;
  /**
   * The next job, taken in the transaction that stored this one's result (`run`'s `draining`);
   * null when that found the queue empty; absent when it did not look.
   */
  readonly next?: Taken | null;
}

export interface EvolutionWorkerOptions {
  readonly settings: Settings;
  readonly pool: Pool;
  /** pg-boss's statements for the experiment's queue, run on `pool` inside the worker's transactions. */
  readonly queue: QueueStatements;
  readonly logger: Logger;
  readonly repository: WorkerRepository;
  readonly agent: MutationAgent;
  readonly workerId: string;
  readonly host: string;
  /** Where results wait through a database outage (absent: an outage fails the job as before). */
  readonly spool?: ResultSpool;
  /** Told when a job's result went to the spool: the job is no longer lost if this process dies. */
  readonly onSpooled?: (queueJobId: string) => void;
  /** Told when a job failed, before the failure is recorded (the job's log line). */
  readonly onFailed?: (error: unknown, queueJob: QueueJob) => void;
  /** The process's presence, recorded by the claim itself (absent: the claim records none). */
  readonly presence?: ClaimPresence;
  /**
   * Whether a take also asks if jobs are left ready (`Taken.moreReady`, one more query): only the
   * supervisor's waker uses the answer, so a worker it does not wake skips it. Default true.
   */
  readonly reportMoreReady?: boolean;
}

/** How the claim records the process's presence (the child runtime provides it). */
export interface ClaimPresence {
  /** Waits for presence writes under way, then gives the row the claim is to write. */
  toRecord(): Promise<WorkerPresence>;
  /** The claim committed with `row`: no separate write is needed for it. */
  recorded(row: WorkerPresence): void;
  /** The row once job `jobId` is done (idle, or busy with another), for the result's transaction to record. */
  afterJob(jobId: string): Promise<WorkerPresence>;
}

/** A queue job taken by `take()`: its evolution job claimed, or skipped (and its queue job completed). */
export type Taken =
  /** `moreReady`: whether jobs were left ready after this one was taken (a `take()` only). */
  | { readonly queueJob: FetchedJob; readonly job: EvolutionJob; readonly skipped?: undefined; readonly moreReady?: boolean }
  | { readonly queueJob: FetchedJob; readonly job?: undefined; readonly skipped: JobLockConflict | JobPreconditionError; readonly moreReady?: undefined };

/** Errors whose queue attempt the worker already failed, in the transaction that recorded the failure. */
const settledFailures = new WeakSet<object>();
/** Errors `onFailed` was told of. */
const reportedFailures = new WeakSet<object>();

/** True when the worker failed the queue attempt of `error` itself (nothing is left to settle). */
export function queueAttemptSettled(error: unknown): boolean {
  return typeof error === 'object' && error !== null && settledFailures.has(error);
}

/** True when `onFailed` was told of `error` already. */
export function failureReported(error: unknown): boolean {
  return typeof error === 'object' && error !== null && reportedFailures.has(error);
}

/** Thrown inside `take()`'s transaction to roll the fetch back: the worker began draining. */
class DrainedBeforeClaim extends Error {}

/**
 * Runs one evolution job from claim to stored result. One instance serves the worker process for
 * its whole life; it keeps no per-job state between calls.
 */
export class EvolutionWorker {
  private readonly options: EvolutionWorkerOptions;

  constructor(options: EvolutionWorkerOptions) {
    this.options = options;
  }

  /**
   * Takes the next queue job and claims its evolution job, in one transaction: pg-boss's fetch,
   * then the claim (which records the process busy on it). A message that names no job it can run,
   * or a row another worker holds, is skipped: its queue job is completed in the same transaction
   * with why, and not retried. Undefined when the queue has nothing ready, or when `draining` was
   * aborted meanwhile (the fetch is rolled back: the queue job waits, untouched, for another worker).
   */
  async take(draining?: AbortSignal): Promise<Taken | undefined> {
    const { pool, presence } = this.options;
    const base = presence ? await presence.toRecord() : undefined;
    let taken: Taken | undefined;
    try {
      taken = await withTransaction(pool, async (client) => {
        const found = await this.takeIn(client, base, draining);
        // Whether the supervisor should wake another worker for the rest (a dispatch batch).
        return found?.job && this.options.reportMoreReady !== false ? { ...found, moreReady: await this.options.queue.anyReady(client) } : found;
      });
    } catch (error) {
      if (error instanceof DrainedBeforeClaim) return undefined;
      throw error;
    }
    if (taken?.job && base) presence!.recorded({ ...base, state: 'busy', currentJobId: taken.job.id });
    return taken;
  }

  /** `take()` inside the caller's transaction; throws `DrainedBeforeClaim` when `draining` was aborted after the fetch. */
  private async takeIn(client: PoolClient, base: WorkerPresence | undefined, draining?: AbortSignal): Promise<Taken | undefined> {
    const { queue } = this.options;
    const queueJob = await queue.fetch(client);
    if (!queueJob) return undefined;
    if (draining?.aborted) throw new DrainedBeforeClaim();
    try {
      return { queueJob, job: await this.claimIn(client, queueJob, base && { ...base, state: 'busy' }) };
    } catch (error) {
      if (!(error instanceof JobLockConflict || error instanceof JobPreconditionError)) throw error;
      await queue.complete(client, queueJob, { skipped: error instanceof JobLockConflict ? 'lock conflict' : error.message });
      return { queueJob, skipped: error };
    }
  }

  /**
   * Locks the row without waiting and moves it to running, recording the process as busy on it, in
   * one statement; enforces the preconditions.
   */
  async claim(jobId: string, queueJob: QueueJob): Promise<EvolutionJob> {
    const { presence } = this.options;
    const row = presence ? { ...(await presence.toRecord()), state: 'busy', currentJobId: jobId } : undefined;
    const job = await this.claimIn(this.options.pool, queueJob, row);
    if (row) presence!.recorded(row);
    return job;
  }

  private async claimIn(db: Pool | PoolClient, queueJob: QueueJob, row: WorkerPresence | undefined): Promise<EvolutionJob> {
    const { workerId, host, settings } = this.options;
    const experimentId = settings.experiment.uuid;
    const { jobId } = parseEvolutionJobMessage(queueJob.data);
    const presenceRow = row ? { ...row, currentJobId: jobId } : undefined;
    const result: ClaimResult = await claimJob(db, jobId, { experimentId, workerId, host, queueJobId: queueJob.id, presence: presenceRow, skipLocked: true });
    if (result.claimed) return result.claimed;
    if (result.locked) throw new JobLockConflict(`job ${jobId} is locked by another worker`);
    if (!result.found) throw new JobPreconditionError(`job ${jobId} does not exist`);
    if (result.found.experimentId !== experimentId) throw new JobPreconditionError(`job ${jobId} belongs to another experiment (${result.found.experimentId})`);
    throw new JobPreconditionError(`job ${jobId} is ${result.found.status}, not pending or queued`);
  }

  /**
   * `cutShort` is the drain's own signal (also folded into `signal`): a result waiting for the
   * database stops waiting only for it, not when the queue gives up on the claim. `claimed`: the
   * job as `take()` claimed it; absent, the job is claimed here (a queue job fetched elsewhere).
   * `draining`: given and not aborted, the next job is taken in the transaction that stores this
   * one's result (a backlog costs one transaction per job; an empty queue, no extra one).
   */
  async run(queueJob: QueueJob, signal: AbortSignal, cutShort: AbortSignal = signal, claimed?: EvolutionJob, draining?: AbortSignal): Promise<JobOutcome> {
    const { settings, logger, repository } = this.options;
    const { jobId } = parseEvolutionJobMessage(queueJob.data);
    const job = claimed ?? (await this.claim(jobId, queueJob));
    const log = logger.child({ jobId });
    const started = performance.now();
    observeJobPickup(job.queuedAt, job.startedAt);
    log.info({ baseCommit: job.baseCommit, kind: job.kind, attempt: job.attempts, queueJobId: queueJob.id }, 'job started');

    const branch = jobBranchName(settings.experiment, jobId);
    const artifacts: Record<string, string> = {};
    let worktree: JobWorktree | undefined;
    try {
      worktree = await repository.createWorktree(jobId, branch, job.baseCommit);
      const context: JobContext = {
        jobId,
        experimentId: job.experimentId,
        namespace: settings.experiment.namespace,
        kind: job.kind,
        baseCommit: job.baseCommit,
        inspirations: job.inspirations,
        goal: job.goal,
        payload: job.payload,
        island: job.island,
        branch,
        worktree: worktree.directory,
        attempt: job.attempts,
      };
      await writeJobContext(worktree, context);

      let commit = job.baseCommit;
      let message = '';
      let files: string[] = [];
      // A baseline job measures the parent as it is: no agent, no commit.
      if (job.kind !== 'baseline') {
        const mutation = await this.options.agent.mutate({ context, worktree, signal, logger: log });
        Object.assign(artifacts, mutation.artifacts);
        throwIfAborted(signal);
        message = mutation.commitMessage?.trim() || `Evolution job ${jobId}`;
        const author = { name: settings.worker.git.authorName, email: settings.worker.git.authorEmail };
        const created = await commitAll(worktree.directory, message, author);
        if (!created) throw new EvolutionWorkerError(`the ${this.options.agent.name} agent made no change to the code`, { artifacts });
        commit = created.hash;
        files = [...created.files];
        log.info({ commit, files: files.length }, 'candidate committed');
        // To the URL: a push to 'origin' would leave a remote-tracking ref per job (see pushBranch).
        if (settings.repository.push) await pushBranch(worktree.directory, settings.repository.remoteUrl, branch, commit);
      }

      throwIfAborted(signal);
      const evaluation = await evaluate(settings.worker.evaluator, context, worktree, signal);
      artifacts.evaluator_output = evaluation.output;
      throwIfAborted(signal);

      const result: SpooledResult = {
        version: 1,
        jobId,
        experimentId: job.experimentId,
        kind: job.kind,
        baseCommit: job.baseCommit,
        queueJobId: queueJob.id,
        queueRetryCount: queueJob.retryCount,
        commit,
        branch: job.kind === 'baseline' ? null : branch,
        author: settings.worker.git.authorName,
        message,
        files,
        summary: evaluation.summary,
        metrics: evaluation.metrics,
        artifacts: { ...artifacts },
        spooledAt: new Date().toISOString(),
      };
      let next: Taken | null | undefined;
      try {
        const stored = await this.storeAttempt(result, await this.options.presence?.afterJob(jobId), draining);
        next = stored.next;
        if (stored.outcome !== 'recorded') {
          // Only the attempt that holds the job may finish it: the scheduler may have failed it
          // meanwhile (an expired queue job), or a retry may have taken it over.
          throw new EvolutionWorkerError(`job ${jobId} is no longer held by this attempt (failed or taken over meanwhile): result ${commit} discarded`);
        }
      } catch (error) {
        if (!this.options.spool || !isDatabaseUnavailable(error)) throw error;
        await this.spoolUntilRecorded(result, cutShort, log);
      }
      log.info({ commit, metrics: Object.fromEntries(evaluation.metrics.map((m) => [m.name, m.value])), ms: Math.round(performance.now() - started) }, 'job complete');
      observeJobDone('succeeded', (performance.now() - started) / 1000);
      return { jobId, commit, next };
    } catch (error) {
      if (error instanceof ResultSpooled) throw error;
      const cause = signal.aborted && signal.reason instanceof JobHandedBack ? signal.reason : error;
      observeJobDone(cause instanceof JobHandedBack ? 'handed_back' : 'failed', (performance.now() - started) / 1000);
      if (!(cause instanceof JobHandedBack)) {
        // Said before it is recorded: whoever sees the job failed finds the reason in the log.
        this.options.onFailed?.(cause, queueJob);
        if (typeof cause === 'object' && cause !== null) reportedFailures.add(cause);
        await this.recordFailure(job, queueJob, cause, { ...artifacts, ...(cause instanceof EvolutionWorkerError ? cause.artifacts : {}) });
      }
      throw cause;
    } finally {
      if (worktree) {
        await repository.removeWorktree(worktree).catch((error) => log.warn({ err: error }, 'could not remove the job worktree'));
      }
    }
  }

  /**
   * Records a result in one transaction: commit card, metrics, artifacts, the row marked succeeded
   * and the queue job settled; either all of it is recorded or none.
   *
   * `attempt`: only while this attempt holds the job (running on this queue job); otherwise
   * nothing is written (`not-held`). `spooled`: a result kept through an outage is recorded for any
   * job not finished yet, and the queue job the row points at now is settled (the attempt may have
   * been handed back meanwhile; its branch is pushed and its evaluation done, so it is the job's
   * result). A job that finished meanwhile is left as it is: a result is recorded once.
   */
  async store(result: SpooledResult, mode: 'attempt' | 'spooled'): Promise<'recorded' | 'not-held'> {
    const { pool, queue } = this.options;
    if (mode === 'attempt') return (await this.storeAttempt(result)).outcome;
    const card = commitCard(result);
    return withTransaction(pool, async (client) => {
      const row = await lockJob(client, result.jobId);
      if (!row || !['pending', 'queued', 'running'].includes(row.status)) return 'not-held';
      const queueJobId = row.queueJobId ?? result.queueJobId;
      await upsertCommitCard(client, card);
      await upsertMetrics(client, result.experimentId, result.commit, result.jobId, result.metrics);
      for (const [kind, content] of Object.entries(result.artifacts)) await putArtifact(client, result.jobId, kind, content);
      if (!(await markSucceededUnfinished(client, result.jobId, result.commit))) return 'not-held';
      await queue.completeAnyAttempt(client, queueJobId, { commit: result.commit });
      // Not active any more, or never fetched: the row is the truth, so the queue must not run it again.
      await queue.cancel(client, queueJobId);
      return 'recorded';
    });
  }

  /**
   * `store(result, 'attempt')`, also recording the process's presence once the job is done
   * (`presence`) and, with `draining` given and not aborted, taking the next job in the same
   * transaction (its claim then records the presence). Should taking the next job fail with a
   * statement error, the result is stored again without it: it is never lost for the next job.
   */
  private async storeAttempt(result: SpooledResult, presence?: WorkerPresence, draining?: AbortSignal): Promise<{ outcome: 'recorded' | 'not-held'; next?: Taken | null }> {
    const { pool, queue } = this.options;
    const card = commitCard(result);
    const attempt = async (takeNext: boolean) =>
      withTransaction(pool, async (client) => {
        // Card, metrics, artifacts and the row marked succeeded in one statement, only while this
        // attempt holds the job; then the queue job, in the same transaction.
        if (!(await recordSucceededAttempt(client, { queueJobId: result.queueJobId, card, metrics: result.metrics, artifacts: result.artifacts }))) return { outcome: 'not-held' as const };
        // Not active any more (pg-boss's sweep failed it into a retry): the row is the truth, so
        // the queue must not run it again.
        if (!(await queue.complete(client, { id: result.queueJobId, retryCount: result.queueRetryCount }, { commit: result.commit }))) await queue.cancel(client, result.queueJobId);
        const next = takeNext && draining && !draining.aborted ? ((await this.takeIn(client, presence)) ?? null) : undefined;
        // The process as it is now, unless the next job's claim recorded it busy.
        if (presence && !next?.job) await upsertWorker(client, presence);
        return { outcome: 'recorded' as const, next };
      });
    let stored: { outcome: 'recorded' | 'not-held'; next?: Taken | null };
    try {
      stored = await attempt(true);
    } catch (error) {
      if (!draining || isDatabaseUnavailable(error)) throw error;
      this.options.logger.warn({ err: error }, 'could not take the next job with the result: stored without it');
      stored = await attempt(false);
    }
    if (stored.outcome === 'recorded' && presence) {
      this.options.presence?.recorded(stored.next?.job ? { ...presence, state: 'busy', currentJobId: stored.next.job.id } : presence);
    }
    return stored;
  }

  /**
   * The database went away while recording: the result goes to disk and is recorded as soon as
   * the database is back (capped backoff). If the worker must stop first, the file stays and the
   * next worker on this host records it at start-up.
   */
  private async spoolUntilRecorded(result: SpooledResult, signal: AbortSignal, log: Logger): Promise<void> {
    const spool = this.options.spool!;
    const file = await spool.write(result);
    this.options.onSpooled?.(result.queueJobId);
    log.warn({ commit: result.commit, file }, 'the database is unavailable: result kept on disk, recording it when the database is back');
    const backoff = new Backoff();
    for (;;) {
      try {
        await sleep(backoff.next(), undefined, { signal });
      } catch {
        throw new ResultSpooled(`job ${result.jobId}: the database is still unavailable; result ${result.commit} kept in ${file} for the next start`);
      }
      try {
        const outcome = await this.store(result, 'spooled');
        await spool.remove(result.jobId);
        log.info({ commit: result.commit, outcome, failedTries: backoff.failures }, outcome === 'recorded' ? 'result recorded from the spool' : 'the job had finished meanwhile: spooled result dropped');
        return;
      } catch (error) {
        if (!isDatabaseUnavailable(error)) throw error;
      }
    }
  }

  /** Records what earlier workers on this host left in the spool (at start-up). */
  async flushSpool(): Promise<number> {
    const spool = this.options.spool;
    if (!spool) return 0;
    let recorded = 0;
    for (const result of await spool.list()) {
      if (result.experimentId !== this.options.settings.experiment.uuid) continue;
      const outcome = await this.store(result, 'spooled');
      await spool.remove(result.jobId);
      if (outcome === 'recorded') recorded += 1;
      this.options.logger.info({ jobId: result.jobId, commit: result.commit, outcome }, outcome === 'recorded' ? 'result recorded from the spool' : 'spooled result dropped: the job had finished meanwhile');
    }
    return recorded;
  }

  /**
   * Records a failed attempt and fails its queue job (pg-boss's retry and backoff, fenced to this
   * attempt) in one transaction; `error` is then marked settled (`queueAttemptSettled`).
   */
  private async recordFailure(job: EvolutionJob, queueJob: QueueJob, error: unknown, artifacts: Record<string, string>): Promise<void> {
    const final = queueJob.retryCount >= queueJob.retryLimit;
    try {
      await withTransaction(this.options.pool, async (client) => {
        for (const [kind, content] of Object.entries(artifacts)) await putArtifact(client, job.id, kind, content);
        await recordFailure(client, job.id, errorMessage(error), final, queueJob.id);
        await this.options.queue.fail(client, queueJob, error);
      });
      if (typeof error === 'object' && error !== null) settledFailures.add(error);
    } catch (dbError) {
      this.options.logger.error({ jobId: job.id, err: dbError }, 'could not record the job failure');
    }
  }

  /**
   * Gives a job cut short by a drain back to the queue: the queue job is completed and a fresh one
   * sent for the same evolution job, in one transaction, and the attempt is returned. Nothing is
   * lost and nothing counts as a failure.
   */
  async handBack(queueJob: QueueJob, options: { claimed: boolean } = { claimed: true }): Promise<void> {
    const { pool, queue } = this.options;
    const { jobId } = parseEvolutionJobMessage(queueJob.data);
    await withTransaction(pool, async (client) => {
      await queue.complete(client, queueJob, { handedBack: true });
      // The queue job carries the row's priority: a handed-back baseline keeps its place.
      const fresh = await queue.send(client, { jobId }, queueJob.priority);
      if (options.claimed) await handBack(client, jobId, queueJob.id, fresh);
      else await requeueUnstarted(client, jobId, queueJob.id, fresh);
    });
  }
}

function commitCard(result: SpooledResult): CommitCard & { jobId: string } {
  return {
    experimentId: result.experimentId,
    commitHash: result.commit,
    parentCommit: result.kind === 'baseline' ? null : result.baseCommit,
    jobId: result.jobId,
    branch: result.branch,
    author: result.author,
    message: result.message,
    summary: result.summary,
    changedFiles: result.files,
  };
}

function throwIfAborted(signal: AbortSignal): void {
  if (!signal.aborted) return;
  if (signal.reason instanceof JobHandedBack) throw signal.reason;
  throw new EvolutionWorkerError(`job stopped: ${errorMessage(signal.reason)}`);
}
