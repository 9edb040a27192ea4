import { existsSync } from 'node:fs';
import path from 'node:path';
import { listElites } from '../../shared/db/archive.ts';
import { getExperiment } from '../../shared/db/experiments.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import { reportCommits, reportJobs, reportMetrics, reportModelCalls, type ReportCommit } from '../../shared/db/report.ts';
import { diff, gitAt, hasCommit, isGitRepository } from '../../shared/git.ts';
import { UserError } from '../../shared/errors.ts';
import type { ReadOnlySettings } from '../../shared/settings/index.ts';
import { cellsPerIsland } from '../../shared/settings/archive.ts';

/**
 * Everything `loreley report` shows, read once from the database (and the diffs of the best
 * commit's lineage from git), as plain data the HTML renderer turns into a page.
 */

export interface TimePoint {
  readonly t: number;
  readonly y: number;
}

export interface LineageStep {
  readonly commit: string;
  readonly jobId: string | null;
  readonly message: string;
  readonly summary: string;
  readonly metrics: Record<string, number>;
  readonly fitness: number | null;
  /** `git diff --stat` of this step against its parent; null for the root or when git has neither. */
  readonly diffStat: string | null;
  readonly diff: string | null;
}

export interface HeatmapCell {
  readonly x: number;
  readonly y: number;
  readonly fitness: number;
  readonly commit: string;
  readonly elites: number;
}

export interface ReportData {
  readonly experiment: { readonly slug: string; readonly namespace: string; readonly id: string; readonly rootCommit: string | null; readonly createdAt: Date; readonly finishedAt: Date | null };
  readonly generatedAt: Date;
  readonly metric: string;
  readonly higherIsBetter: boolean;
  readonly jobs: { readonly byStatus: Record<string, number>; readonly total: number; readonly budget: number | null };
  readonly baseline: number | null;
  readonly best: { readonly commit: string; readonly fitness: number; readonly jobId: string | null } | null;
  /** After each scored evolution job, in finishing order: the best so far and the median so far. */
  readonly fitnessOverTime: { readonly best: TimePoint[]; readonly median: TimePoint[]; readonly each: TimePoint[] };
  readonly archive: {
    readonly elites: number;
    readonly cells: number;
    readonly coverage: number;
    readonly dimensions: number;
    readonly shown: readonly [number, number];
    readonly bins: number;
    readonly heatmap: HeatmapCell[];
  };
  readonly lineage: LineageStep[];
  readonly top: ReadonlyArray<{ readonly commit: string; readonly fitness: number; readonly jobId: string | null; readonly metrics: Record<string, number>; readonly summary: string }>;
  readonly failures: ReadonlyArray<{ readonly reason: string; readonly count: number; readonly example: string; readonly jobs: string[] }>;
  readonly usage: {
    readonly calls: number;
    readonly failedCalls: number;
    readonly tokens: number;
    readonly costUsd: number;
    readonly cumulativeCost: TimePoint[];
    readonly cumulativeTokens: TimePoint[];
    readonly cumulativeCalls: TimePoint[];
    readonly byModel: ReadonlyArray<{ readonly model: string; readonly calls: number; readonly tokens: number; readonly costUsd: number }>;
  };
  /** Where the diffs came from, or why there are none. */
  readonly repository: string | null;
}

export interface CollectOptions {
  /** The two descriptor dimensions the heatmap shows (default 0 and 1). */
  readonly dims?: readonly [number, number];
  readonly top?: number;
  readonly lineageLimit?: number;
}

function median(sorted: number[]): number {
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function insertSorted(values: number[], value: number): void {
  let low = 0;
  let high = values.length;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (values[mid] < value) low = mid + 1;
    else high = mid;
  }
  values.splice(low, 0, value);
}

/** A failure's reason without what differs between occurrences (ids, hashes, numbers, paths). */
export function failureReason(error: string | null): string {
  if (!error) return '(no error recorded)';
  const first = error.split('\n').find((line) => line.trim() !== '') ?? error;
  return first
    .replace(/(\/[\w.@-]+){2,}/g, '<path>')
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<id>')
    .replace(/\b[0-9a-f]{12,40}\b/gi, '<commit>')
    .replace(/\d+(\.\d+)?/g, 'N')
    .trim()
    .slice(0, 160);
}

/** A repository holding the experiment's commits: the remote when it is a local path, else the base clone. */
function localRepository(settings: ReadOnlySettings, remote: string | null): string | null {
  const candidates = [remote, path.join(settings.dataDir, 'repos', settings.experiment.namespace)];
  for (const candidate of candidates) {
    if (candidate && !/^[a-z][a-z0-9+.-]*:\/\//i.test(candidate) && existsSync(candidate) && isGitRepository(candidate)) return candidate;
  }
  return null;
}

async function diffOf(repository: string | null, parent: string | null, commit: string): Promise<{ stat: string | null; diff: string | null }> {
  if (!repository || !parent || !(await hasCommit(repository, commit)) || !(await hasCommit(repository, parent))) return { stat: null, diff: null };
  const [stat, full] = await Promise.all([gitAt(repository).raw(['diff', '--no-color', '--stat=100', parent, commit]), diff(repository, parent, commit)]);
  // A diff of megabytes would make the page unusable; the head of it says what changed.
  const limit = 200_000;
  return { stat: stat.trimEnd(), diff: full.length > limit ? `${full.slice(0, limit)}\n… (${full.length - limit} more characters: git diff ${parent} ${commit})` : full };
}

export async function collectReport(db: Queryable, settings: ReadOnlySettings, options: CollectOptions = {}): Promise<ReportData> {
  const experimentId = settings.experiment.uuid;
  const experiment = await getExperiment(db, experimentId);
  if (!experiment) throw new UserError(`experiment ${settings.experiment.raw} (${experimentId}) has no data in this database yet`);
  const [jobs, metrics, commits, calls, elites] = await Promise.all([
    reportJobs(db, experimentId),
    reportMetrics(db, experimentId),
    reportCommits(db, experimentId),
    reportModelCalls(db, experimentId),
    listElites(db, experimentId),
  ]);
  const metric = settings.archive.fitnessMetric;
  const higher = settings.archive.fitnessHigherIsBetter;
  const better = (a: number, b: number) => (higher ? a > b : a < b);

  const metricsByCommit = new Map<string, Record<string, number>>();
  for (const row of metrics) {
    const entry = metricsByCommit.get(row.commitHash) ?? {};
    entry[row.name] = row.value;
    metricsByCommit.set(row.commitHash, entry);
  }
  const fitnessOf = (commit: string | null | undefined): number | null => (commit ? metricsByCommit.get(commit)?.[metric] ?? null : null);
  const commitByHash = new Map<string, ReportCommit>(commits.map((card) => [card.commitHash, card]));

  // Fitness over time: every evolution job that produced a scored commit, in finishing order.
  const each: TimePoint[] = [];
  const bestSeries: TimePoint[] = [];
  const medianSeries: TimePoint[] = [];
  const sorted: number[] = [];
  let bestSoFar: number | undefined;
  for (const job of jobs) {
    if (job.kind !== 'evolution' || job.status !== 'succeeded' || !job.finishedAt) continue;
    const fitness = fitnessOf(job.resultCommit);
    if (fitness === null) continue;
    const t = job.finishedAt.getTime();
    each.push({ t, y: fitness });
    insertSorted(sorted, fitness);
    if (bestSoFar === undefined || better(fitness, bestSoFar)) bestSoFar = fitness;
    bestSeries.push({ t, y: bestSoFar });
    medianSeries.push({ t, y: median(sorted) });
  }

  let best: ReportData['best'] = null;
  for (const row of metrics) {
    if (row.name !== metric) continue;
    if (!best || better(row.value, best.fitness)) best = { commit: row.commitHash, fitness: row.value, jobId: row.jobId };
  }

  // The archive seen through two descriptor dimensions, the best elite over the rest.
  const dimensions = Math.max(0, ...elites.map((elite) => elite.descriptor.length));
  const requested = options.dims ?? [0, 1];
  if (dimensions > 0 && (requested[0] >= dimensions || requested[1] >= dimensions || requested[0] === requested[1])) {
    throw new UserError(`--dims ${requested.join(',')}: the archive has ${dimensions} descriptor dimensions (0..${dimensions - 1}); name two different ones`);
  }
  const shown: [number, number] = dimensions >= 2 ? [requested[0], requested[1]] : [0, 0];
  const bins = Math.min(64, settings.archive.cellsPerDim);
  const bin = (value: number | undefined) => Math.min(bins - 1, Math.max(0, Math.floor((value ?? 0) * bins)));
  const cellMap = new Map<string, HeatmapCell>();
  for (const elite of elites) {
    const x = bin(elite.descriptor[shown[0]]);
    const y = dimensions >= 2 ? bin(elite.descriptor[shown[1]]) : 0;
    const key = `${x},${y}`;
    const current = cellMap.get(key);
    if (!current) cellMap.set(key, { x, y, fitness: elite.fitness, commit: elite.commitHash, elites: 1 });
    else cellMap.set(key, better(elite.fitness, current.fitness) ? { x, y, fitness: elite.fitness, commit: elite.commitHash, elites: current.elites + 1 } : { ...current, elites: current.elites + 1 });
  }
  const cells = cellsPerIsland(settings.archive) * settings.archive.islands;

  // The lineage of the best commit, root first.
  const repository = localRepository(settings, experiment.repositoryUrl);
  const chain: string[] = [];
  const seen = new Set<string>();
  for (let commit: string | null | undefined = best?.commit; commit && !seen.has(commit) && chain.length < (options.lineageLimit ?? 200); commit = commitByHash.get(commit)?.parentCommit) {
    seen.add(commit);
    chain.unshift(commit);
  }
  const lineage: LineageStep[] = [];
  for (const commit of chain) {
    const card = commitByHash.get(commit);
    const { stat, diff: text } = await diffOf(repository, card?.parentCommit ?? null, commit);
    lineage.push({
      commit,
      jobId: card?.jobId ?? null,
      message: card?.message ?? '',
      summary: card?.summary ?? '',
      metrics: metricsByCommit.get(commit) ?? {},
      fitness: fitnessOf(commit),
      diffStat: stat,
      diff: text,
    });
  }

  const top = [...metricsByCommit.entries()]
    .filter(([, values]) => values[metric] !== undefined)
    .sort(([, a], [, b]) => (higher ? b[metric] - a[metric] : a[metric] - b[metric]))
    .slice(0, options.top ?? 10)
    .map(([commit, values]) => ({ commit, fitness: values[metric], jobId: commitByHash.get(commit)?.jobId ?? null, metrics: values, summary: commitByHash.get(commit)?.summary ?? '' }));

  const failureGroups = new Map<string, { reason: string; count: number; example: string; jobs: string[] }>();
  for (const job of jobs) {
    if (job.status !== 'failed') continue;
    const reason = failureReason(job.lastError);
    const group = failureGroups.get(reason) ?? { reason, count: 0, example: (job.lastError ?? '').slice(0, 2000), jobs: [] };
    group.count += 1;
    if (group.jobs.length < 20) group.jobs.push(job.id);
    failureGroups.set(reason, group);
  }

  let cost = 0;
  let tokens = 0;
  const byModel = new Map<string, { model: string; calls: number; tokens: number; costUsd: number }>();
  const cumulativeCost: TimePoint[] = [];
  const cumulativeTokens: TimePoint[] = [];
  const cumulativeCalls: TimePoint[] = [];
  calls.forEach((call, index) => {
    const callTokens = Number(call.promptTokens) + Number(call.completionTokens);
    cost += Number(call.costUsd);
    tokens += callTokens;
    const t = call.createdAt.getTime();
    cumulativeCost.push({ t, y: cost });
    cumulativeTokens.push({ t, y: tokens });
    cumulativeCalls.push({ t, y: index + 1 });
    const model = byModel.get(call.model) ?? { model: call.model, calls: 0, tokens: 0, costUsd: 0 };
    model.calls += 1;
    model.tokens += callTokens;
    model.costUsd += Number(call.costUsd);
    byModel.set(call.model, model);
  });

  const byStatus: Record<string, number> = { pending: 0, queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
  for (const job of jobs) if (job.kind === 'evolution') byStatus[job.status] = (byStatus[job.status] ?? 0) + 1;
  const baselineJob = jobs.filter((job) => job.kind === 'baseline').at(-1);

  return {
    experiment: { slug: settings.experiment.raw, namespace: settings.experiment.namespace, id: experimentId, rootCommit: experiment.rootCommit, createdAt: experiment.createdAt, finishedAt: experiment.finishedAt },
    generatedAt: new Date(),
    metric,
    higherIsBetter: higher,
    jobs: { byStatus, total: jobs.filter((job) => job.kind === 'evolution').length, budget: settings.scheduler.maxTotalJobs ?? null },
    baseline: baselineJob ? fitnessOf(baselineJob.baseCommit) : fitnessOf(experiment.rootCommit),
    best,
    fitnessOverTime: { best: bestSeries, median: medianSeries, each },
    archive: { elites: elites.length, cells, coverage: cells > 0 ? elites.length / cells : 0, dimensions, shown, bins, heatmap: [...cellMap.values()] },
    lineage,
    top,
    failures: [...failureGroups.values()].sort((a, b) => b.count - a.count),
    usage: {
      calls: calls.length,
      failedCalls: calls.filter((call) => !call.ok).length,
      tokens,
      costUsd: cost,
      cumulativeCost,
      cumulativeTokens,
      cumulativeCalls,
      byModel: [...byModel.values()].sort((a, b) => b.costUsd - a.costUsd),
    },
    repository,
  };
}
