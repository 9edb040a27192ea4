import type { Progress } from './progress.ts';
import { formatCost, formatScore } from './summary.ts';
import type { SlotView } from './supervisor.ts';

function shortState(slot: SlotView): string {
  const job = slot.jobId ? `:${slot.jobId.slice(0, 8)}` : '';
  const rss = slot.rssBytes ? ` ${Math.round(slot.rssBytes / (1024 * 1024))}M` : '';
  const restarts = slot.restarts > 0 ? ` r${slot.restarts}` : '';
  return `${slot.id}=${slot.state}${job}${rss}${restarts}`;
}

/** Jobs done of the budget, the best score so far and the money spent. */
export function progressLine(progress: Progress): string {
  const done = progress.jobs.succeeded + progress.jobs.failed + progress.jobs.cancelled;
  const jobs = `jobs ${done}${progress.budget !== null ? `/${progress.budget}` : ''} done${progress.jobs.running ? `, ${progress.jobs.running} running` : ''}`;
  const best = progress.best ? `best ${formatScore(progress.best.value)}` : 'best -';
  const cost = progress.maxCostUsd !== null ? `${formatCost(progress.usage.costUsd)} of ${formatCost(progress.maxCostUsd)}` : formatCost(progress.usage.costUsd);
  return `${jobs}, ${best}, ${cost}`;
}

/** One compact line: the run's progress (when known), counts by state, then every slot. */
export function statusLine(slots: readonly SlotView[], progress?: Progress): string {
  const counts = new Map<string, number>();
  for (const slot of slots) counts.set(slot.state, (counts.get(slot.state) ?? 0) + 1);
  const summary = [...counts.entries()].map(([state, count]) => `${count} ${state}`).join(', ');
  return `${progress ? `${progressLine(progress)} | ` : ''}${summary} | ${slots.map(shortState).join(' ')}`;
}
