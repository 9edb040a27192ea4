import { costBudgetSnapshot } from '../shared/db/usage.ts';
import { costBudgetExhausted as budgetReached } from '../shared/llm/budget.ts';
import type { SchedulerContext } from './context.ts';

/**
 * LORELEY_MAX_COST_USD: model spending so far, plus the jobs in flight at the average cost of a
 * finished one, has reached the budget.
 */
export async function costBudgetExhausted(context: SchedulerContext): Promise<boolean> {
  const maxCostUsd = context.settings.agent.maxCostUsd;
  if (maxCostUsd === undefined) return false;
  const snapshot = await costBudgetSnapshot(context.pool, context.experimentId);
  const exhausted = budgetReached({ ...snapshot, maxCostUsd });
  if (exhausted) context.logger.debug({ ...snapshot, maxCostUsd }, 'cost budget reached: no new jobs');
  return exhausted;
}
