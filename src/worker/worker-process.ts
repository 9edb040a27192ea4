import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigurationError, EvolutionWorkerError, JobHandedBack, JobLockConflict, JobPreconditionError } from '../shared/errors.ts';
import type { ChildRuntime } from '../shared/runtime.ts';
import type { MutationAgent } from './agent.ts';
import { createAgent } from './agents/index.ts';
import { prepareCommands } from './containment.ts';
import { EvolutionWorker } from './evolution-worker.ts';
import { messageJobId, type QueueJob } from '../shared/queue.ts';
import { WorkerRepository } from './repository.ts';
import { ResultSpool, ResultSpooled, spoolDirectory } from './spool.ts';

interface InFlight {
  readonly jobId: string | null;
  readonly controller: AbortController;
  readonly finished: Promise<void>;
}

/** The longest a worker that is woken for sent jobs waits between its own fetches (a lost wake costs at most this). */
const BACKSTOP_POLL_SECONDS = 10;

function wakeQueueWorkers(boss: ChildRuntime['boss'], queue: string): void {
  for (const worker of boss.getWipData()) {
    if (worker.name === queue) boss.notifyWorker(worker.id);
  }
}

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
  const { settings, logger, pool, boss } = runtime;
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
  const worker = new EvolutionWorker({
    settings, pool, boss, logger, repository, agent, workerId: runtime.workerId, host: runtime.host,
    spool: new ResultSpool(spoolDirectory(settings.dataDir, settings.experiment.namespace)),
    onSpooled: (queueJobId) => {
      spooled.add(queueJobId);
      reportHeld();
    },
    presence: { toRecord: () => runtime.presenceToRecord(), recorded: (row) => runtime.presenceRecorded(row) },
  });
  const flushed = await worker.flushSpool().catch((error) => {
    logger.warn({ err: error }, 'could not record the spooled results yet; the next start tries again');
    return 0;
  });
  if (flushed > 0) logger.info({ results: flushed }, 'recorded results that earlier workers kept through a database outage');

  const handle = async (queueJob: QueueJob & { signal: AbortSignal }): Promise<object | undefined> => {
    // A fetch already under way when the drain began delivers its job after it: give it back
    // untouched rather than start it (or let pg-boss fail it at shutdown).
    if (runtime.drainSignal.aborted) {
      await worker.handBack(queueJob, { claimed: false });
      logger.info({ queueJobId: queueJob.id }, 'job arrived while draining: handed back unstarted');
      return { handedBack: true };
    }
    const controller = new AbortController();
    let resolveFinished!: () => void;
    const finished = new Promise<void>((resolve) => (resolveFinished = resolve));
    const jobId = messageJobId(queueJob.data);
    inFlight.set(queueJob.id, { jobId, controller, finished });
    reportHeld();
    runtime.setState('busy', jobId);
    const log = logger.child({ jobId, queueJobId: queueJob.id });
    try {
      const outcome = await worker.run(queueJob, AbortSignal.any([queueJob.signal, controller.signal]), controller.signal);
      return { commit: outcome.commit };
    } catch (error) {
      if (error instanceof JobHandedBack) {
        await worker.handBack(queueJob);
        log.warn({ reason: error.message }, 'job handed back to the queue');
        return { handedBack: true };
      }
      if (error instanceof ResultSpooled) {
        log.warn({ reason: error.message }, 'job result left in the spool');
        return { spooled: true };
      }
      if (error instanceof JobLockConflict) {
        log.info({ reason: error.message }, 'job skipped: lock conflict');
        return { skipped: 'lock conflict' };
      }
      if (error instanceof JobPreconditionError) {
        log.warn({ reason: error.message }, 'job skipped: precondition failed');
        return { skipped: error.message };
      }
      if (error instanceof ConfigurationError) {
        log.fatal({ error: error.message }, 'job failed: the worker cannot go on with these settings');
        fatal ??= error;
        fatalSignal.abort();
      } else if (error instanceof EvolutionWorkerError) {
        log.error({ error: error.message }, 'job failed');
      } else {
        log.error({ err: error }, 'job failed unexpectedly');
      }
      throw error;
    } finally {
      inFlight.delete(queueJob.id);
      spooled.delete(queueJob.id);
      reportHeld();
      resolveFinished();
      runtime.setState(runtime.drainSignal.aborted ? 'draining' : inFlight.size > 0 ? 'busy' : 'idle');
      // pg-boss waits out its poll interval between jobs even with a backlog; a notified worker
      // fetches again at once instead (and finds nothing, cheaply, when the queue is empty).
      if (!runtime.drainSignal.aborted) wakeQueueWorkers(boss, settings.queue.name);
    }
  };

  // Woken for sent jobs (our own LISTEN, or the supervisor's `wake`), a worker polls only as a
  // backstop for a lost wake: as rarely as pg-boss polls a queue whose NOTIFYs it listens for.
  const backstopSeconds = Math.max(settings.queue.pollingIntervalSeconds, BACKSTOP_POLL_SECONDS);
  await boss.work(
    settings.queue.name,
    {
      batchSize: 1,
      localConcurrency: settings.worker.concurrency,
      includeMetadata: true,
      pollingIntervalSeconds: runtime.wokenBySupervisor ? backstopSeconds : settings.queue.pollingIntervalSeconds,
      notifyPollingIntervalSeconds: backstopSeconds,
    },
    async ([job]) => handle(job),
  );
  // A wake between our fetches is kept by pg-boss (the next fetch skips its wait); one while
  // draining is ignored: a draining worker takes nothing more.
  runtime.onWake(() => {
    if (!runtime.drainSignal.aborted) wakeQueueWorkers(boss, settings.queue.name);
  });
  runtime.setState('idle');

  if (!runtime.drainSignal.aborted) await Promise.race([once(runtime.drainSignal, 'abort'), once(fatalSignal.signal, 'abort')]);
  runtime.setState('draining');
  await boss.offWork(settings.queue.name, { wait: false });

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
  logger.info('worker drained');
  if (fatal) throw fatal;
}
