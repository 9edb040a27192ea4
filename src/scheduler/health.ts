import { findJobsByKind, recentFinishedEvolutionJobs } from '../shared/db/jobs.ts';
import { breakerDecision, type SystemicKind } from './breaker.ts';
import type { SchedulerContext } from './context.ts';

/**
 * Whether the run may spend money on evolution jobs. Two checks, before every schedule stage:
 *
 * 1. The baseline gates the run: no evolution job is scheduled until the root's baseline
 *    evaluation has succeeded. If it failed (its queue retries spent), the evaluator cannot
 *    score even the unchanged program, so every evolution job would be wasted: the run stops.
 * 2. The circuit breaker (`breaker.ts`) over the evolution jobs finished since this scheduler
 *    started: K in a row failed for one systemic reason, so the run stops. Only jobs since the
 *    start count, so a restart after the cause was fixed is not stopped by the old failures.
 *
 * A stopped run ends at once with the reason in its final summary; the supervisor prints it and
 * exits non-zero.
 */

export type RunStopKind = 'baseline-failed' | 'all-failed' | SystemicKind;

export interface RunStop {
  readonly kind: RunStopKind;
  readonly reason: string;
}

export type RunHealth = { readonly state: 'ok' } | { readonly state: 'waiting-for-baseline' } | { readonly state: 'stopped'; readonly stop: RunStop };

export async function checkRunHealth(context: SchedulerContext, since: Date): Promise<RunHealth> {
  const { pool, experimentId, settings } = context;
  const baseline = (await findJobsByKind(pool, experimentId, 'baseline')).at(-1);
  if (baseline && baseline.status !== 'succeeded') {
    if (baseline.status !== 'failed' && baseline.status !== 'cancelled') return { state: 'waiting-for-baseline' };
    const attempts = `${baseline.attempts} attempt${baseline.attempts === 1 ? '' : 's'}`;
    return {
      state: 'stopped',
      stop: {
        kind: 'baseline-failed',
        reason: `the baseline evaluation of the root commit ${baseline.baseCommit.slice(0, 12)} ${baseline.status} after ${attempts}, so no evolution job was scheduled: ${baseline.lastError ?? 'no error recorded'}`,
      },
    };
  }
  const threshold = settings.scheduler.maxConsecutiveFailures;
  if (threshold > 0) {
    const recent = await recentFinishedEvolutionJobs(pool, experimentId, since, threshold);
    const decision = breakerDecision(recent, threshold);
    if (decision.tripped) return { state: 'stopped', stop: { kind: decision.kind, reason: decision.reason } };
  }
  return { state: 'ok' };
}
