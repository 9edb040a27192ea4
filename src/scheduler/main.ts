import { UserError } from '../shared/errors.ts';
import type { ChildRuntime } from '../shared/runtime.ts';
import { acquireSchedulerLock } from './lock.ts';
import { runSchedulerLoop } from './loop.ts';
import { EvolutionScheduler } from './scheduler.ts';

export interface SchedulerProcessOptions {
  readonly once: boolean;
}

/**
 * The scheduler process: waits as a standby until it holds the experiment's scheduler lock, starts
 * the experiment, then ticks until drained. When the run is finished it tells the supervisor,
 * which stops everything under --exit-when-done.
 */
export async function runSchedulerProcess(runtime: ChildRuntime, options: SchedulerProcessOptions): Promise<void> {
  const { settings, pool, boss, logger } = runtime;
  let lock;
  // `--once` is a one-shot tick: it does not wait behind a running scheduler.
  const giveUp = new AbortController();
  try {
    lock = await acquireSchedulerLock(pool, settings.experiment.uuid, AbortSignal.any([runtime.drainSignal, giveUp.signal]), {
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
  } catch (error) {
    if (giveUp.signal.aborted) throw giveUp.signal.reason;
    if (runtime.drainSignal.aborted) return;
    throw error;
  }
  logger.info('scheduler lock held: this process schedules the experiment');
  const stop = AbortSignal.any([runtime.drainSignal, lock.lost]);
  const onLost = () => logger.error({ reason: String(lock.lost.reason) }, 'lost the scheduler lock: stopping scheduling');
  lock.lost.addEventListener('abort', onLost);
  try {
    // The OpenAI SDK is loaded only when an embeddings endpoint is configured.
    const embedder = settings.agent.embeddings.enabled ? (await import('../shared/llm/embeddings.ts')).embedderFromSettings(settings, pool, stop) : undefined;
    const scheduler = new EvolutionScheduler({ settings, pool, boss, logger, workerId: runtime.workerId, embedder });
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
    await lock.release();
  }
}
