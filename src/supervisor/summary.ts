import { JOB_STATUSES } from '../shared/db/jobs.ts';
import type { Progress } from './progress.ts';

/**
 * The few plain lines a run ends with on stdout: what it found, what it cost, and where to look
 * next. `loreley-supervisor` prints them whenever it stops after starting its children, and
 * `npm start` shows the same (it runs the supervisor). Pure: everything comes in `RunSummaryInput`.
 */

export type RunOutcome =
  /** The scheduler reported the experiment finished (budget or cost budget spent). */
  | { readonly kind: 'finished' }
  /** Stopped by a signal (Ctrl+C, SIGTERM from pm2 or systemd) before the run finished. */
  | { readonly kind: 'stopped'; readonly signal: string }
  /** A fatal error: every worker slot errored, the scheduler errored, a configuration error. */
  | { readonly kind: 'failed'; readonly code: number };

export interface RunSummaryInput {
  readonly experiment: string;
  readonly outcome: RunOutcome;
  /** At the end of the run. */
  readonly progress: Progress;
  /** At the start of the run: tells a run that had nothing to do apart from one that did the work. */
  readonly atStart: Progress | undefined;
  readonly wallMs: number;
  /** Where the best commit can be had: the branch the scheduler wrote, the remote, the base clone. */
  readonly checkout: { readonly branch: string; readonly remoteUrl: string; readonly pushed: boolean; readonly baseClone: string };
  readonly logsDirectory: string;
  readonly reportFile: string;
}

/** A URL's user and password are not printed (a token in an https remote). */
export function withoutCredentials(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.username === '' && parsed.password === '') return url;
    parsed.username = '';
    parsed.password = '';
    return parsed.toString();
  } catch {
    return url; // A path or scp-like address: no credentials in it.
  }
}

export function formatDuration(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${Math.round(seconds % 60)}s`;
  return `${Math.floor(minutes / 60)}h ${minutes % 60}m`;
}

export function formatScore(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) return value.toExponential(4);
  return String(Number(value.toFixed(4)));
}

export function formatPercent(fraction: number): string {
  const percent = fraction * 100;
  if (percent === 0 || percent >= 0.1) return `${Number(percent.toFixed(1))}%`;
  return `${Number(percent.toPrecision(2))}%`;
}

export function formatCost(usd: number): string {
  return `$${usd.toFixed(usd >= 100 ? 2 : 4)}`;
}

function headline(input: RunSummaryInput): string {
  const { outcome, progress } = input;
  const budget = progress.budget !== null ? `the budget of ${progress.budget} jobs is spent` : undefined;
  const cost = progress.maxCostUsd !== null ? `the cost budget of ${formatCost(progress.maxCostUsd)} is spent` : undefined;
  switch (outcome.kind) {
    case 'finished': {
      const why = progress.budget !== null && progress.total >= progress.budget ? budget : cost ?? budget;
      return `Run finished: ${why ?? 'every job is done'}.`;
    }
    case 'stopped':
      return `Run stopped by ${outcome.signal} before it finished; start the supervisor again to go on.`;
    case 'failed':
      return `Run stopped with an error (exit ${outcome.code}): see the supervisor's log below.`;
  }
}

/** A run that started with the budget already spent did nothing: say so, and how to go on. */
function alreadySpent(input: RunSummaryInput): string[] {
  const start = input.atStart;
  if (!start || input.outcome.kind !== 'finished' || input.progress.total !== start.total) return [];
  if (start.budget !== null && start.total >= start.budget) {
    return [
      `Nothing new ran: the budget of ${start.budget} jobs was already spent before this run.`,
      `To go on, raise it: loreley-supervisor --max-jobs ${start.budget + Math.max(10, start.budget)} (or set SCHEDULER_MAX_TOTAL_JOBS).`,
    ];
  }
  if (start.maxCostUsd !== null && start.usage.costUsd >= start.maxCostUsd) {
    return [
      `Nothing new ran: the cost budget of ${formatCost(start.maxCostUsd)} was already spent (${formatCost(start.usage.costUsd)}) before this run.`,
      'To go on, raise LORELEY_MAX_COST_USD.',
    ];
  }
  return [];
}

export function formatRunSummary(input: RunSummaryInput): string {
  const { progress, checkout } = input;
  const label = (name: string) => `  ${name.padEnd(10)}`;
  const lines = [`${headline(input)}`, ...alreadySpent(input)];

  if (progress.best) {
    const { best } = progress;
    const gain = progress.baseline?.fitness !== null && progress.baseline?.fitness !== undefined ? best.value - progress.baseline.fitness : undefined;
    const vs = gain !== undefined ? ` (${gain >= 0 ? '+' : ''}${formatScore(gain)} over the baseline)` : '';
    lines.push(`${label('best')}${progress.metric} ${formatScore(best.value)} at ${best.commitHash.slice(0, 12)}${vs}`);
    if (input.outcome.kind === 'finished' && checkout.pushed) {
      lines.push(`${label('')}git clone --branch ${checkout.branch} ${withoutCredentials(checkout.remoteUrl)} best-program`);
    } else {
      lines.push(`${label('')}git -C ${checkout.baseClone} checkout ${best.commitHash}`);
    }
  } else {
    lines.push(`${label('best')}no scored commit yet`);
  }
  const baseline = progress.baseline;
  lines.push(
    `${label('baseline')}${baseline ? (baseline.fitness !== null ? `${progress.metric} ${formatScore(baseline.fitness)}` : `no ${progress.metric}`) + ` (${baseline.status})` : 'not evaluated'}`,
  );
  const statuses = JOB_STATUSES.filter((status) => progress.jobs[status] > 0 || status === 'succeeded' || status === 'failed');
  const ofBudget = progress.budget !== null ? ` of ${progress.budget}` : '';
  lines.push(
    `${label('jobs')}${progress.total}${ofBudget}: ${statuses.map((status) => `${status} ${progress.jobs[status]}`).join(', ')}; baseline ${baseline?.status ?? 'none'}`,
  );
  const usage = progress.usage;
  const ofCost = progress.maxCostUsd !== null ? ` of ${formatCost(progress.maxCostUsd)}` : '';
  lines.push(
    usage.calls === 0
      ? `${label('models')}no model calls`
      : `${label('models')}${usage.calls} calls${usage.failedCalls ? ` (${usage.failedCalls} failed)` : ''}, ${usage.promptTokens + usage.completionTokens} tokens, ${formatCost(usage.costUsd)}${ofCost}`,
  );
  lines.push(`${label('archive')}${progress.archive.elites} elites in ${progress.archive.cells} cells (coverage ${formatPercent(progress.archive.coverage)})`);
  lines.push(`${label('wall time')}${formatDuration(input.wallMs)}`);
  lines.push(`${label('logs')}loreley logs -f   (JSONL files under ${input.logsDirectory})`);
  lines.push(`${label('report')}loreley report --open   (writes ${input.reportFile})`);
  lines.push(`${label('status')}loreley status`);
  return `${lines.join('\n')}\n`;
}
