import { setTimeout as sleep } from 'node:timers/promises';
import type { FinalSummary } from './finish.ts';
import type { EvolutionScheduler, TickSummary } from './scheduler.ts';

export interface SchedulerLoopOptions {
  readonly pollIntervalSeconds: number;
  /** Stops the loop between ticks (a tick in progress completes). */
  readonly signal: AbortSignal;
  /** Run one tick (and finish if the experiment is done), then return. */
  readonly once?: boolean;
  /** Called once with the final summary when the experiment has finished. */
  readonly onFinished?: (summary: FinalSummary) => void | Promise<void>;
  /** Called after every tick, e.g. to report the scheduler's state. */
  readonly onTick?: (summary: TickSummary) => void;
}

export type SchedulerLoopResult = { readonly reason: 'finished'; readonly summary: FinalSummary } | { readonly reason: 'stopped' | 'once'; readonly ticks: number };

/**
 * Ticks every `pollIntervalSeconds` until the experiment is finished (budget spent, every job done
 * and ingested), `once` has run its tick, or `signal` aborts. The wait between ticks ends early
 * on abort; a tick itself is never cut short.
 */
export async function runSchedulerLoop(scheduler: EvolutionScheduler, options: SchedulerLoopOptions): Promise<SchedulerLoopResult> {
  let ticks = 0;
  while (!options.signal.aborted) {
    const summary = await scheduler.tick();
    await scheduler.publishNotes();
    ticks += 1;
    options.onTick?.(summary);
    if (await scheduler.isFinished()) {
      const final = await scheduler.finish();
      await options.onFinished?.(final);
      return { reason: 'finished', summary: final };
    }
    if (options.once) {
      await scheduler.settle();
      return { reason: 'once', ticks };
    }
    try {
      await sleep(options.pollIntervalSeconds * 1000, undefined, { signal: options.signal });
    } catch {
      break;
    }
  }
  await scheduler.settle();
  return { reason: 'stopped', ticks };
}
