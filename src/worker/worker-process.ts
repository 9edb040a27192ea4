import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigurationError, EvolutionWorkerError, JobHandedBack, JobLockConflict } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { ChildRuntime } from '../shared/runtime.ts';
import type { MutationAgent } from './agent.ts';
import { createAgent } from './agents/index.ts';
import { prepareCommands } from './containment.ts';
import { EvolutionWorker, failureReported, queueAttemptSettled, type Taken } from './evolution-worker.ts';
import { FetchLoop } from './fetch-loop.ts';
import { HeldClaim } from './held-claim.ts';
import type { ChildState } from '../shared/ipc.ts';
import { messageJobId } from '../shared/queue-message.ts';
import { QueueListener } from '../shared/queue-listener.ts';
import { QueueStatements } from '../shared/queue-statements.ts';
import { WorkerRepository } from './repository.ts';
import { ResultSpool, ResultSpooled, spoolDirectory } from './spool.ts';

interface InFlight {
  readonly jobId: string | null;
  readonly controller: AbortController;
  readonly finished: Promise<void>;
}

/** The longest a worker that is woken for sent jobs waits between its own fetches (a lost wake costs at most this). */
const BACKSTOP_POLL_SECONDS = 10;

export interface WorkerProcessOptions {
  /** Replaces the agent `WORKER_AGENT_BACKEND` names (tests, embedding). */
  readonly agent?: MutationAgent;
  /** Replaces the git clone (the bench's queue path without git). */
  readonly repository?: WorkerRepository;
}

/**
 * One worker process: takes jobs from the experiment's queue one at a time (by default) until it
 * is asked to drain, then stops fetching, lets the job in hand finish within the drain timeout
 * and hands it back to the queue past that.
 */
export async function runWorker(runtime: ChildRuntime, options: WorkerProcessOptions = {}): Promise<void> {
  const { settings, logger, pool } = runtime;
  prepareCommands(settings, logger);
  // A ConfigurationError in a job (the evaluator's files changed) stops the worker with exit 78.
  let fatal: ConfigurationError | undefined;
  const fatalSignal = new AbortController();
  const repository = options.repository ?? new WorkerRepository({
    settings: { remoteUrl: settings.repository.remoteUrl, baseClone: settings.worker.git.baseClone, push: settings.repository.push },
    logger,
    workerId: runtime.workerId,
    host: runtime.host,
  });
  const swept = await repository.sweepAbandoned();
  if (swept.length > 0) logger.info({ swept }, 'removed worktrees left by a stopped worker');
  const branches = await repository.sweepBranches();
  if (branches.length > 0) logger.info({ branches: branches.length }, 'deleted local job branches left by stopped workers');
  const agent = options.agent ?? (await createAgent({ settings, pool, logger }));
  const inFlight = new Map<string, InFlight>();
  // Jobs whose result is on disk: not lost if this process dies (the next start records them).
  const spooled = new Set<string>();
  // The supervisor hands these back at once if this process is killed with them in hand.
  const reportHeld = () =>
    runtime.setHeldJobs([...inFlight].flatMap(([queueJobId, job]) => (job.jobId && !spooled.has(queueJobId) ? [{ jobId: job.jobId, queueJobId }] : [])));
  // What the process is once the job `queueJobId` (or the one on `jobId`) is done: what `setState`
  // says after it, and what the result's transaction records.
  const stateAfterJob = (done: string) => {
    const others = [...inFlight].filter(([queueJobId, job]) => queueJobId !== done && job.jobId !== done);
    const state: ChildState = runtime.drainSignal.aborted ? 'draining' : others.length > 0 ? 'busy' : 'idle';
    return { state, currentJobId: null };
  };
  const queue = await QueueStatements.load(pool, settings);
  const onQueueError = (error: unknown) => logger.warn({ err: error }, 'queue error');
  const reportFailure = (error: unknown, log: Logger) => {
    if (error instanceof ConfigurationError) {
      log.fatal({ error: error.message }, 'job failed: the worker cannot go on with these settings');
      fatal ??= error;
      fatalSignal.abort();
    } else if (error instanceof EvolutionWorkerError) {
      log.error({ error: error.message }, 'job failed');
    } else {
      log.error({ err: error }, 'job failed unexpectedly');
    }
  };

  const worker = new EvolutionWorker({
    settings, pool, queue, logger, repository, agent, workerId: runtime.workerId, host: runtime.host,
    reportMoreReady: runtime.wokenBySupervisor,
    spool: new ResultSpool(spoolDirectory(settings.dataDir, settings.experiment.namespace)),
    onFailed: (error, queueJob) => reportFailure(error, logger.child({ jobId: messageJobId(queueJob.data), queueJobId: queueJob.id })),
    onSpooled: (queueJobId) => {
      spooled.add(queueJobId);
      reportHeld();
    },
    presence: {
      toRecord: () => runtime.presenceToRecord(),
      recorded: (row) => runtime.presenceRecorded(row),
      afterJob: async (jobId) => ({ ...(await runtime.presenceToRecord()), ...stateAfterJob(jobId) }),
    },
  });
  const flushed = await worker.flushSpool().catch((error) => {
    logger.warn({ err: error }, 'could not record the spooled results yet; the next start tries again');
    return 0;
  });
  if (flushed > 0) logger.info({ results: flushed }, 'recorded results that earlier workers kept through a database outage');

  const handle = async (taken: Taken): Promise<Taken | 'empty' | undefined> => {
    const { queueJob } = taken;
    const jobId = messageJobId(queueJob.data);
    const log = logger.child({ jobId, queueJobId: queueJob.id });
    // Its queue job was completed with why, in the transaction that fetched it.
    if (taken.skipped instanceof JobLockConflict) {
      log.info({ reason: taken.skipped.message }, 'job skipped: lock conflict');
      return undefined;
    }
    if (taken.skipped) {
      log.warn({ reason: taken.skipped.message }, 'job skipped: precondition failed');
      return undefined;
    }
    // Taken with the last job's result as the drain began: given back untouched, attempt returned.
    if (runtime.drainSignal.aborted) {
      await worker.handBack(queueJob);
      log.info('job arrived while draining: handed back unstarted');
      return undefined;
    }
    const controller = new AbortController();
    let resolveFinished!: () => void;
    const finished = new Promise<void>((resolve) => (resolveFinished = resolve));
    inFlight.set(queueJob.id, { jobId, controller, finished });
    reportHeld();
    runtime.setState('busy', jobId, taken.moreReady);
    // The queue's side of holding the job: heartbeats, and its time limit.
    const claimLost = new AbortController();
    const claim = new HeldClaim({ pool, queue, job: queueJob, abort: (reason) => claimLost.abort(reason), onError: onQueueError });
    let next: Taken | null | undefined;
    try {
      next = (await worker.run(queueJob, AbortSignal.any([claimLost.signal, controller.signal]), controller.signal, taken.job, runtime.drainSignal)).next;
      return next === null ? 'empty' : next;
    } catch (error) {
      if (error instanceof JobHandedBack) {
        await worker.handBack(queueJob);
        log.warn({ reason: error.message }, 'job handed back to the queue');
        return undefined;
      }
      if (error instanceof ResultSpooled) {
        log.warn({ reason: error.message }, 'job result left in the spool');
        // As pg-boss did after the handler: the attempt is over, the spool records the result.
        await queue.complete(pool, queueJob, { spooled: true }).catch(onQueueError);
        return undefined;
      }
      if (!failureReported(error)) reportFailure(error, log);
      // Failed with the row in one transaction, unless recording the failure itself failed.
      if (!queueAttemptSettled(error)) await queue.fail(pool, queueJob, error).catch(onQueueError);
      return undefined;
    } finally {
      claim.release();
      inFlight.delete(queueJob.id);
      spooled.delete(queueJob.id);
      reportHeld();
      resolveFinished();
      // With a next job in hand the process stays busy: the next job's start says so.
      if (!next?.job) runtime.setState(stateAfterJob(queueJob.id).state);
    }
  };

  // Woken for sent jobs (our own LISTEN, or the supervisor's `wake`), a worker polls only as a
  // backstop for a lost wake: as rarely as pg-boss polls a queue whose NOTIFYs it listens for.
  const backstopMs = Math.max(settings.queue.pollingIntervalSeconds, BACKSTOP_POLL_SECONDS) * 1000;
  const loop = new FetchLoop<Taken>({
    concurrency: settings.worker.concurrency,
    pollMs: () => (runtime.wokenBySupervisor || listener?.isListening ? backstopMs : settings.queue.pollingIntervalSeconds * 1000),
    take: () => worker.take(runtime.drainSignal),
    handle,
    onError: onQueueError,
  });
  // A `loreley worker` run by hand has nobody to wake it: it LISTENs itself (one connection).
  const listener = runtime.wokenBySupervisor
    ? undefined
    : new QueueListener({
        url: settings.database.url!,
        settings,
        logger,
        applicationName: `loreley-${runtime.workerId}-queue`,
        listeningMessage: 'listening for sent jobs',
        onSent: () => loop.wake(),
        onListening: () => loop.wake(),
      });
  // A wake between our fetches makes the next fetch skip its wait; one while draining is ignored:
  // a draining worker takes nothing more.
  runtime.onWake(() => {
    if (!runtime.drainSignal.aborted) loop.wake();
  });
  listener?.start();
  loop.start();
  runtime.setState('idle');

  if (!runtime.drainSignal.aborted) await Promise.race([once(runtime.drainSignal, 'abort'), once(fatalSignal.signal, 'abort')]);
  runtime.setState('draining');
  const stopped = loop.stop();
  await listener?.close();

  const pending = () => Promise.all([...inFlight.values()].map((job) => job.finished));
  if (inFlight.size > 0) {
    const timeoutMs = runtime.drainTimeoutSeconds() * 1000;
    logger.info({ jobs: inFlight.size, timeoutSeconds: runtime.drainTimeoutSeconds() }, 'waiting for the job in hand');
    const stopNow = runtime.stopSignal.aborted ? Promise.resolve() : once(runtime.stopSignal, 'abort').then(() => undefined);
    const outcome = await Promise.race([pending().then(() => 'finished' as const), sleep(timeoutMs).then(() => 'timeout' as const), stopNow.then(() => 'stop' as const)]);
    if (outcome !== 'finished') {
      const reason = outcome === 'timeout' ? `drain timeout of ${runtime.drainTimeoutSeconds()}s passed` : 'asked to stop now';
      for (const job of inFlight.values()) job.controller.abort(new JobHandedBack(reason));
      await pending();
    }
  }
  await stopped;
  logger.info('worker drained');
  if (fatal) throw fatal;
}
