/**
 * The cost budget (`LORELEY_MAX_COST_USD`): no new job is scheduled once what was spent, plus what
 * the jobs in flight will likely spend (each at the average cost of a finished job), reaches the
 * budget. Jobs already running finish; the run then ends as it does when the job budget is spent.
 */

export interface CostBudgetInput {
  /** USD spent by every model call of the experiment so far. */
  readonly spentUsd: number;
  /** Jobs that ran to an end (succeeded or failed): the denominator of the average job cost. */
  readonly finishedJobs: number;
  /** Jobs that will still spend: pending, queued or running. */
  readonly inFlightJobs: number;
  /** Unset (or null) means no cost budget. */
  readonly maxCostUsd: number | undefined | null;
}

/**
 * True when no new job should be scheduled. Before any job has finished the average is unknown, so
 * in-flight jobs count as free; a budget of 0 is exhausted from the start.
 *
 *   costBudgetExhausted({ spentUsd: 0.8, finishedJobs: 8, inFlightJobs: 2, maxCostUsd: 1 }) // true: 0.8 + 2 × 0.1 ≥ 1
 */
export function costBudgetExhausted(input: CostBudgetInput): boolean {
  const { spentUsd, finishedJobs, inFlightJobs, maxCostUsd } = input;
  if (maxCostUsd === undefined || maxCostUsd === null) return false;
  const averageJobCost = finishedJobs > 0 ? spentUsd / finishedJobs : 0;
  return spentUsd + Math.max(0, inFlightJobs) * averageJobCost >= maxCostUsd;
}
