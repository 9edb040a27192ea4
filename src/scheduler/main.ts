import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../shared/backoff.ts';
import { isDatabaseUnavailable } from '../shared/db-availability.ts';
import { errorMessage, UserError } from '../shared/errors.ts';
import type { ChildRuntime } from '../shared/runtime.ts';
import { acquireSchedulerLock, type SchedulerLock } from './lock.ts';
import { runSchedulerLoop } from './loop.ts';
import { EvolutionScheduler } from './scheduler.ts';

export interface SchedulerProcessOptions {
  readonly once: boolean;
}

/**
 * The scheduler process: waits as a standby until it holds the experiment's scheduler lock, starts
 * the experiment, then ticks until drained. When the run is finished it tells the supervisor,
 * which stops everything under --exit-when-done.
 *
 * A database outage is ridden out, not turned into an exit (which the supervisor would count as a
 * crash): the lock's connection dies with the server, so the scheduler stops scheduling at once
 * (another scheduler may take over), stands by, and takes the lock again when the database is
 * back, with capped backoff between tries.
 */
export async function runSchedulerProcess(runtime: ChildRuntime, options: SchedulerProcessOptions): Promise<void> {
  const { logger } = runtime;
  const backoff = new Backoff();
  for (;;) {
    const lock = await takeLock(runtime, options);
    if (!lock) return;
    let outage: unknown;
    try {
      await schedule(runtime, options, lock);
      backoff.reset();
    } catch (error) {
      if (options.once || runtime.drainSignal.aborted || !(lock.lost.aborted || isDatabaseUnavailable(error))) throw error;
      outage = error;
    } finally {
      await lock.release();
    }
    if (runtime.drainSignal.aborted || (!lock.lost.aborted && outage === undefined)) return;
    runtime.setState('standby');
    const delayMs = backoff.next();
    logger.warn(
      { reason: errorMessage(outage ?? lock.lost.reason), retryInMs: delayMs },
      'lost the scheduler lock (database unavailable?): standing by to take it again',
    );
    await sleep(delayMs, undefined, { signal: runtime.drainSignal }).catch(() => undefined);
  }
}

/** The lock, or undefined when the process was drained while waiting for it. */
async function takeLock(runtime: ChildRuntime, options: SchedulerProcessOptions): Promise<SchedulerLock | undefined> {
  const { settings, pool, logger } = runtime;
  // `--once` is a one-shot tick: it does not wait behind a running scheduler.
  const giveUp = new AbortController();
  try {
    const lock = await acquireSchedulerLock(pool, settings.experiment.uuid, AbortSignal.any([runtime.drainSignal, giveUp.signal]), {
      pollIntervalMs: settings.scheduler.lockPollSeconds * 1000,
      onStandby: () => {
        if (options.once) {
          giveUp.abort(new UserError('another scheduler is running this experiment; --once does not wait for it'));
          return;
        }
        runtime.setState('standby');
        logger.info('another scheduler holds this experiment: waiting as a standby');
      },
    });
    logger.info('scheduler lock held: this process schedules the experiment');
    return lock;
  } catch (error) {
    if (giveUp.signal.aborted) throw giveUp.signal.reason;
    if (runtime.drainSignal.aborted) return undefined;
    throw error;
  }
}

async function schedule(runtime: ChildRuntime, options: SchedulerProcessOptions, lock: SchedulerLock): Promise<void> {
  const { settings, pool, boss, logger } = runtime;
  if (!boss) throw new Error('the scheduler runtime has no queue (pg-boss)');
  const stop = AbortSignal.any([runtime.drainSignal, lock.lost]);
  const onLost = () => logger.error({ reason: String(lock.lost.reason) }, 'lost the scheduler lock: stopping scheduling');
  lock.lost.addEventListener('abort', onLost);
  try {
    // The OpenAI SDK is loaded only when an embeddings endpoint is configured.
    const embedder = settings.agent.embeddings.enabled ? (await import('../shared/llm/embeddings.ts')).embedderFromSettings(settings, pool, stop) : undefined;
    const scheduler = new EvolutionScheduler({
      settings,
      pool,
      boss,
      logger,
      workerId: runtime.workerId,
      embedder,
      // Right after taking the lock (a start, or the database back after an outage) a lapsed queue
      // heartbeat may only mean the database was away: live workers get one interval to touch theirs.
      heartbeatsTrustedAfter: Date.now() + settings.queue.heartbeatSeconds * 1000,
    });
    await scheduler.start();
    runtime.setState('idle');
    const outcome = await runSchedulerLoop(scheduler, {
      pollIntervalSeconds: settings.scheduler.pollIntervalSeconds,
      signal: stop,
      once: options.once,
      onFinished: (summary) => runtime.send({ loreley: 'done', summary }),
    });
    if (outcome.reason === 'finished') {
      // Nothing more to schedule; stay up (idle) until drained so the supervisor's view is stable.
      if (!options.once && !stop.aborted) await new Promise((resolve) => stop.addEventListener('abort', resolve, { once: true }));
    }
    if (lock.lost.aborted && !runtime.drainSignal.aborted) throw new Error('lost the scheduler lock (database connection closed)');
  } finally {
    lock.lost.removeEventListener('abort', onLost);
  }
}
