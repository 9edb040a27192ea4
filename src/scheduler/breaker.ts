/**
 * The circuit breaker: decides, from the last finished evolution jobs, whether the run is broken
 * rather than merely unlucky. A pure module (no database, no clock), so every decision can be
 * tested alone; `health.ts` feeds it and acts on it.
 *
 * Some failures say nothing about the candidate and will repeat for every job: the agent or the
 * evaluator cannot start, the model endpoint refuses or cannot be reached, the evaluator prints
 * something that is not a result, there is no evolvable code. When the last
 * `SCHEDULER_MAX_CONSECUTIVE_FAILURES` finished jobs all failed for one such kind, every further
 * job would too (each a paid model call): the breaker trips. Ordinary candidate failures (the
 * program crashes, the evaluator rejects it, the edit did not apply, a timeout) never trip it, nor
 * does a mix of kinds, nor a streak broken by one success.
 *
 *   breakerDecision([{ status: 'failed', lastError: 'evaluator "nope" could not start: …' }, …×5], 5)
 *   // { tripped: true, kind: 'evaluator-start', … }
 */

export const SYSTEMIC_KINDS = {
  'agent-start': 'the mutation agent could not start',
  'evaluator-start': 'the evaluator could not start',
  'model-endpoint': 'the model endpoint refused or could not be reached',
  'evaluator-output': "the evaluator's output was unusable",
  'no-evolvable-code': 'there is no evolvable code',
} as const;

export type SystemicKind = keyof typeof SYSTEMIC_KINDS;

const RULES: ReadonlyArray<readonly [SystemicKind, RegExp]> = [
  // A command that cannot be spawned, or that a shell could not find or run (126, 127).
  ['evaluator-start', /^evaluator\b[^\n]*?(could not start|exited with code 12[67]\b)/],
  ['agent-start', /^agent command\b[^\n]*?(could not start|exited with code 12[67]\b)/],
  ['evaluator-output', /^evaluator\b[^\n]*? output is invalid:/],
  // The openai backend: a call that failed after the SDK's retries (HTTP error, connection, timeout).
  ['model-endpoint', /^(coding|planning) call failed: (?!the agent ran past)/],
  // A coding-agent CLI whose own report says the API refused it.
  ['model-endpoint', /\((codex|claude): [^)]*(API Error|unauthori[sz]ed|invalid api key|authentication|rate limit|overloaded|\b40[13]\b|\b429\b|\b5\d\d\b)/i],
  ['no-evolvable-code', /^no evolvable code:/],
];

/** The systemic kind of a failed job's `last_error`, or undefined for an ordinary candidate failure. */
export function classifyFailure(lastError: string | null | undefined): SystemicKind | undefined {
  if (!lastError) return undefined;
  for (const [kind, pattern] of RULES) if (pattern.test(lastError)) return kind;
  return undefined;
}

export interface FinishedJob {
  readonly status: string;
  readonly lastError: string | null;
}

export type BreakerDecision =
  | { readonly tripped: false }
  | { readonly tripped: true; readonly kind: SystemicKind; readonly reason: string };

/** `recent`: finished evolution jobs, newest first. */
export function breakerDecision(recent: readonly FinishedJob[], threshold: number): BreakerDecision {
  if (threshold <= 0 || recent.length < threshold) return { tripped: false };
  const window = recent.slice(0, threshold);
  if (window.some((job) => job.status !== 'failed')) return { tripped: false };
  const kinds = window.map((job) => classifyFailure(job.lastError));
  const kind = kinds[0];
  if (kind === undefined || kinds.some((other) => other !== kind)) return { tripped: false };
  const example = (window[0].lastError ?? '').split('\n')[0].slice(0, 600);
  return {
    tripped: true,
    kind,
    reason: `the last ${threshold} jobs all failed because ${SYSTEMIC_KINDS[kind]} (SCHEDULER_MAX_CONSECUTIVE_FAILURES=${threshold}); the latest: ${example}`,
  };
}
