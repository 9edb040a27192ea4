import { jobBranchName } from '../shared/experiment.ts';
import { observeJobDone, observeJobPickup } from '../shared/metrics.ts';
import { handBack, lockJobNoWait, markRunning, markSucceeded, recordFailure, requeueUnstarted, type EvolutionJob } from '../shared/db/jobs.ts';
import { PG_LOCK_NOT_AVAILABLE, pgErrorCode, withTransaction, type Pool } from '../shared/db/pool.ts';
import { putArtifact, upsertCommitCard, upsertMetrics } from '../shared/db/results.ts';
import {
  errorMessage,
  EvolutionWorkerError,
  JobHandedBack,
  JobLockConflict,
  JobPreconditionError,
} from '../shared/errors.ts';
import { commitAll, pushBranch } from '../shared/git.ts';
import type { Logger } from '../shared/logger.ts';
import { completeQueueJob, parseEvolutionJobMessage, sendEvolutionJob, type PgBoss, type QueueJob } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { JobContext, MutationAgent } from './agent.ts';
import { evaluate } from './evaluator.ts';
import { writeJobContext } from './job-command.ts';
import type { JobWorktree, WorkerRepository } from './repository.ts';

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

  /** Locks the row without waiting and moves it to running; enforces the preconditions. */
  async claim(jobId: string, queueJob: QueueJob): Promise<EvolutionJob> {
    const { pool, workerId, host } = this.options;
    try {
      return await withTransaction(pool, async (client) => {
        const row = await lockJobNoWait(client, jobId);
        if (!row) throw new JobPreconditionError(`job ${jobId} does not exist`);
        if (row.experimentId !== this.options.settings.experiment.uuid) {
          throw new JobPreconditionError(`job ${jobId} belongs to another experiment (${row.experimentId})`);
        }
        // A queue retry of the same queue job after its worker died finds the row still running.
        const retryOfDeadAttempt = row.status === 'running' && row.queueJobId === queueJob.id;
        if (row.status !== 'pending' && row.status !== 'queued' && !retryOfDeadAttempt) {
          throw new JobPreconditionError(`job ${jobId} is ${row.status}, not pending or queued`);
        }
        return markRunning(client, jobId, { workerId, host, queueJobId: queueJob.id });
      });
    } catch (error) {
      if (pgErrorCode(error) === PG_LOCK_NOT_AVAILABLE) throw new JobLockConflict(`job ${jobId} is locked by another worker`);
      throw error;
    }
  }

  async run(queueJob: QueueJob, signal: AbortSignal): Promise<JobOutcome> {
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

      await withTransaction(this.options.pool, async (client) => {
        await upsertCommitCard(client, {
          experimentId: job.experimentId,
          commitHash: commit,
          parentCommit: job.kind === 'baseline' ? null : job.baseCommit,
          jobId,
          branch: job.kind === 'baseline' ? null : branch,
          author: settings.worker.git.authorName,
          message,
          summary: evaluation.summary,
          changedFiles: files,
        });
        await upsertMetrics(client, job.experimentId, commit, jobId, evaluation.metrics);
        for (const [kind, content] of Object.entries(artifacts)) await putArtifact(client, jobId, kind, content);
        // Only the attempt that holds the job may finish it: the scheduler may have failed it
        // meanwhile (an expired queue job), or a retry may have taken it over.
        if (!(await markSucceeded(client, jobId, queueJob.id, commit))) {
          throw new EvolutionWorkerError(`job ${jobId} is no longer held by this attempt (failed or taken over meanwhile): result ${commit} discarded`);
        }
        // Completing the queue job in the same transaction: either both record success or neither.
        await completeQueueJob(this.options.boss, settings.queue.name, queueJob, { commit }, client);
      });
      log.info({ commit, metrics: Object.fromEntries(evaluation.metrics.map((m) => [m.name, m.value])), ms: Math.round(performance.now() - started) }, 'job complete');
      observeJobDone('succeeded', (performance.now() - started) / 1000);
      return { jobId, commit };
    } catch (error) {
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

  private async recordFailure(job: EvolutionJob, queueJob: QueueJob, error: unknown, artifacts: Record<string, string>): Promise<void> {
    const final = queueJob.retryCount >= queueJob.retryLimit;
    try {
      await withTransaction(this.options.pool, async (client) => {
        for (const [kind, content] of Object.entries(artifacts)) await putArtifact(client, job.id, kind, content);
        await recordFailure(client, job.id, errorMessage(error), final);
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
