import { countElitesByIsland } from '../shared/db/archive.ts';
import { countByStatus, findJobsByKind, type JobStatus } from '../shared/db/jobs.ts';
import type { Queryable } from '../shared/db/pool.ts';
import { getMetrics } from '../shared/db/results.ts';
import { bestByMetric, jobCounts } from '../shared/db/status.ts';
import { usageTotals, type UsageTotals } from '../shared/db/usage.ts';
import type { ReadOnlySettings } from '../shared/settings/index.ts';
import { cellsPerIsland } from '../shared/settings/archive.ts';

/**
 * Where an experiment stands, read from the database in a handful of small queries: what the
 * status line, the end-of-run summary and the metrics endpoint show. The database is the truth
 * (several hosts, restarted children); nothing here is counted in memory.
 */
export interface Progress {
  /** Evolution jobs by status (not the baseline). */
  readonly jobs: Record<JobStatus, number>;
  /** Evolution jobs in any status: what SCHEDULER_MAX_TOTAL_JOBS counts. */
  readonly total: number;
  readonly budget: number | null;
  readonly baseline: { readonly status: JobStatus; readonly fitness: number | null } | null;
  readonly best: { readonly commitHash: string; readonly value: number; readonly jobId: string | null } | null;
  readonly metric: string;
  readonly usage: UsageTotals;
  readonly maxCostUsd: number | null;
  readonly archive: { readonly elites: number; readonly cells: number; readonly coverage: number };
}

export type ProgressSettings = Pick<ReadOnlySettings, 'experiment' | 'archive' | 'scheduler' | 'agent'>;

export async function readProgress(db: Queryable, settings: ProgressSettings): Promise<Progress> {
  const id = settings.experiment.uuid;
  const metric = settings.archive.fitnessMetric;
  const [jobs, counts, best, usage, byIsland, baselines] = await Promise.all([
    countByStatus(db, id),
    jobCounts(db, id),
    bestByMetric(db, id, metric, settings.archive.fitnessHigherIsBetter),
    usageTotals(db, id),
    countElitesByIsland(db, id),
    findJobsByKind(db, id, 'baseline'),
  ]);
  const baselineJob = baselines.at(-1);
  let baseline: Progress['baseline'] = null;
  if (baselineJob) {
    const metrics = baselineJob.status === 'succeeded' ? await getMetrics(db, id, baselineJob.baseCommit) : [];
    baseline = { status: baselineJob.status, fitness: metrics.find((m) => m.name === metric)?.value ?? null };
  }
  const elites = [...byIsland.values()].reduce((sum, count) => sum + count, 0);
  const cells = cellsPerIsland(settings.archive) * settings.archive.islands;
  return {
    jobs,
    total: counts.total,
    budget: settings.scheduler.maxTotalJobs ?? null,
    baseline,
    best: best ?? null,
    metric,
    usage,
    maxCostUsd: settings.agent.maxCostUsd ?? null,
    archive: { elites, cells, coverage: cells > 0 ? elites / cells : 0 },
  };
}
