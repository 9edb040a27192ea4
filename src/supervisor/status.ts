import type { SlotView } from './supervisor.ts';

function shortState(slot: SlotView): string {
  const job = slot.jobId ? `:${slot.jobId.slice(0, 8)}` : '';
  const rss = slot.rssBytes ? ` ${Math.round(slot.rssBytes / (1024 * 1024))}M` : '';
  const restarts = slot.restarts > 0 ? ` r${slot.restarts}` : '';
  return `${slot.id}=${slot.state}${job}${rss}${restarts}`;
}

/** One compact line: counts by state, then every slot. */
export function statusLine(slots: readonly SlotView[]): string {
  const counts = new Map<string, number>();
  for (const slot of slots) counts.set(slot.state, (counts.get(slot.state) ?? 0) + 1);
  const summary = [...counts.entries()].map(([state, count]) => `${count} ${state}`).join(', ');
  return `${summary} | ${slots.map(shortState).join(' ')}`;
}
