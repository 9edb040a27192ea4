import { jobBranchName } from '../shared/experiment.ts';
import { observeJobDone, observeJobPickup } from '../shared/metrics.ts';
import { claimJob, handBack, lockJob, markSucceededUnfinished, recordFailure, requeueUnstarted, type ClaimResult, type EvolutionJob } from '../shared/db/jobs.ts';
import { PG_LOCK_NOT_AVAILABLE, pgErrorCode, withTransaction, type Pool } from '../shared/db/pool.ts';
import { putArtifact, recordSucceededAttempt, upsertCommitCard, upsertMetrics, type CommitCard } from '../shared/db/results.ts';
import type { WorkerPresence } from '../shared/db/workers.ts';
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
import { cancelQueueJob, completeAnyAttempt, completeQueueJob, parseEvolutionJobMessage, sendEvolutionJob, type PgBoss, type QueueJob } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { JobContext, MutationAgent } from './agent.ts';
import { evaluate } from './evaluator.ts';
import { writeJobContext } from './job-command.ts';
import type { JobWorktree, WorkerRepository } from './repository.ts';
import { ResultSpool, ResultSpooled, type SpooledResult } from './spool.ts';

export interface JobOutcome {
  readonly jobId: string;
  readonly commit: string;
}

export interface EvolutionWorkerOptions {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly logger: Logger;
  readonly repository: WorkerRepository;
  readonly agent: MutationAgent;
  readonly workerId: string;
  readonly host: string;
  /** Where results wait through a database outage (absent: an outage fails the job as before). */
  readonly spool?: ResultSpool;
  /** Told when a job's result went to the spool: the job is no longer lost if this process dies. */
  readonly onSpooled?: (queueJobId: string) => void;
  /** The process's presence, recorded by the claim itself (absent: the claim records none). */
  readonly presence?: ClaimPresence;
}

/** How the claim records the process's presence (the child runtime provides it). */
export interface ClaimPresence {
  /** Waits for presence writes under way, then gives the row the claim is to write. */
  toRecord(): Promise<WorkerPresence>;
  /** The claim committed with `row`: no separate write is needed for it. */
  recorded(row: WorkerPresence): void;
}

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
   * Locks the row without waiting and moves it to running, recording the process as busy on it, in
   * one statement; enforces the preconditions.
   */
  async claim(jobId: string, queueJob: QueueJob): Promise<EvolutionJob> {
    const { pool, workerId, host, settings, presence } = this.options;
    const experimentId = settings.experiment.uuid;
    const row = presence ? { ...(await presence.toRecord()), state: 'busy', currentJobId: jobId } : undefined;
    let result: ClaimResult;
    try {
      result = await claimJob(pool, jobId, { experimentId, workerId, host, queueJobId: queueJob.id, presence: row });
    } catch (error) {
      if (pgErrorCode(error) === PG_LOCK_NOT_AVAILABLE) throw new JobLockConflict(`job ${jobId} is locked by another worker`);
      throw error;
    }
    if (result.claimed) {
      if (row) presence!.recorded(row);
      return result.claimed;
    }
    if (!result.found) throw new JobPreconditionError(`job ${jobId} does not exist`);
    if (result.found.experimentId !== experimentId) throw new JobPreconditionError(`job ${jobId} belongs to another experiment (${result.found.experimentId})`);
    throw new JobPreconditionError(`job ${jobId} is ${result.found.status}, not pending or queued`);
  }

  /**
   * `cutShort` is the drain's own signal (also folded into `signal`): a result waiting for the
   * database stops waiting only for it, not when the queue gives up on the claim.
   */
  async run(queueJob: QueueJob, signal: AbortSignal, cutShort: AbortSignal = signal): Promise<JobOutcome> {
    const { settings, logger, repository } = this.options;
    const { jobId } = parseEvolutionJobMessage(queueJob.data);
    const job = await this.claim(jobId, queueJob);
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
        if (settings.repository.push) await pushBranch(worktree.directory, branch, commit);
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
      try {
        if ((await this.store(result, 'attempt')) !== 'recorded') {
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
      return { jobId, commit };
    } catch (error) {
      if (error instanceof ResultSpooled) throw error;
      const cause = signal.aborted && signal.reason instanceof JobHandedBack ? signal.reason : error;
      observeJobDone(cause instanceof JobHandedBack ? 'handed_back' : 'failed', (performance.now() - started) / 1000);
      if (!(cause instanceof JobHandedBack)) {
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
    const { settings, pool, boss } = this.options;
    const queue = settings.queue.name;
    const card: CommitCard & { jobId: string } = {
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
    if (mode === 'attempt') {
      return withTransaction(pool, async (client) => {
        // Card, metrics, artifacts and the row marked succeeded in one statement, only while this
        // attempt holds the job; then the queue job, in the same transaction.
        if (!(await recordSucceededAttempt(client, { queueJobId: result.queueJobId, card, metrics: result.metrics, artifacts: result.artifacts }))) return 'not-held';
        const attempt = { id: result.queueJobId, retryCount: result.queueRetryCount, retryLimit: 0, priority: 0, data: null };
        // Not active any more (pg-boss's sweep failed it into a retry): the row is the truth, so
        // the queue must not run it again.
        if (!(await completeQueueJob(boss, queue, attempt, { commit: result.commit }, client))) await cancelQueueJob(boss, queue, result.queueJobId, client);
        return 'recorded';
      });
    }
    return withTransaction(pool, async (client) => {
      const row = await lockJob(client, result.jobId);
      if (!row || !['pending', 'queued', 'running'].includes(row.status)) return 'not-held';
      const queueJobId = row.queueJobId ?? result.queueJobId;
      await upsertCommitCard(client, card);
      await upsertMetrics(client, result.experimentId, result.commit, result.jobId, result.metrics);
      for (const [kind, content] of Object.entries(result.artifacts)) await putArtifact(client, result.jobId, kind, content);
      if (!(await markSucceededUnfinished(client, result.jobId, result.commit))) return 'not-held';
      await completeAnyAttempt(boss, queue, queueJobId, { commit: result.commit }, client);
      // Not active any more, or never fetched: the row is the truth, so the queue must not run it again.
      await cancelQueueJob(boss, queue, queueJobId, client);
      return 'recorded';
    });
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

  private async recordFailure(job: EvolutionJob, queueJob: QueueJob, error: unknown, artifacts: Record<string, string>): Promise<void> {
    const final = queueJob.retryCount >= queueJob.retryLimit;
    try {
      await withTransaction(this.options.pool, async (client) => {
        for (const [kind, content] of Object.entries(artifacts)) await putArtifact(client, job.id, kind, content);
        await recordFailure(client, job.id, errorMessage(error), final, queueJob.id);
      });
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
    const { settings, pool, boss } = this.options;
    const { jobId } = parseEvolutionJobMessage(queueJob.data);
    await withTransaction(pool, async (client) => {
      await completeQueueJob(boss, settings.queue.name, queueJob, { handedBack: true }, client);
      // The queue job carries the row's priority: a handed-back baseline keeps its place.
      const fresh = await sendEvolutionJob(boss, settings.queue.name, { id: jobId, priority: queueJob.priority }, client);
      if (options.claimed) await handBack(client, jobId, queueJob.id, fresh);
      else await requeueUnstarted(client, jobId, queueJob.id, fresh);
    });
  }
}

function throwIfAborted(signal: AbortSignal): void {
  if (!signal.aborted) return;
  if (signal.reason instanceof JobHandedBack) throw signal.reason;
  throw new EvolutionWorkerError(`job stopped: ${errorMessage(signal.reason)}`);
}
