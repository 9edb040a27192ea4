import { once } from 'node:events';
import type { ChildRuntime } from '../shared/runtime.ts';

export interface SchedulerProcessOptions {
  readonly once: boolean;
}

/** The scheduler process. Placeholder until the scheduler lands: waits to be drained. */
export async function runSchedulerProcess(runtime: ChildRuntime, options: SchedulerProcessOptions): Promise<void> {
  runtime.setState('idle');
  if (options.once) return;
  if (!runtime.drainSignal.aborted) await once(runtime.drainSignal, 'abort');
}
