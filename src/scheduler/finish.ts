import { countAwaitingIngestion, countByStatus, countEvolutionJobs, countUnfinished, findJobsByKind, type JobStatus } from '../shared/db/jobs.ts';
import { markExperimentFinished } from '../shared/db/experiments.ts';
import { getMetrics } from '../shared/db/results.ts';
import { bestBranchName } from '../shared/experiment.ts';
import { costBudgetExhausted } from './budget.ts';
import type { SchedulerContext } from './context.ts';

/** A type alias (not an interface) so it passes as the IPC `done` message's summary. */
export type FinalSummary = {
  readonly experiment: string;
  readonly namespace: string;
  readonly rootCommit: string;
  readonly jobs: Record<JobStatus, number>;
  readonly baseline: { readonly status: JobStatus; readonly fitness: number | null } | null;
  readonly best: {
    readonly commit: string;
    readonly fitness: number;
    readonly metric: string;
    readonly island: number;
    readonly cell: number[];
    readonly jobId: string | null;
    readonly metrics: Record<string, number>;
  } | null;
  readonly archive: {
    readonly elites: number;
    readonly byIsland: Record<string, number>;
    readonly islands: number;
    readonly cellsPerIsland: number;
    readonly coverage: number;
  };
  readonly branch: string | null;
  readonly pushed: boolean;
};

/** A budget (jobs or cost) is spent, every job has finished and every success has been ingested. */
export async function experimentIsDone(context: SchedulerContext): Promise<boolean> {
  const { pool, experimentId } = context;
  const budget = context.settings.scheduler.maxTotalJobs;
  if (budget === undefined && context.settings.agent.maxCostUsd === undefined) return false;
  const [total, unfinished, awaiting] = await Promise.all([
    countEvolutionJobs(pool, experimentId),
    countUnfinished(pool, experimentId),
    countAwaitingIngestion(pool, experimentId),
  ]);
  if (unfinished > 0 || awaiting > 0) return false;
  return (budget !== undefined && total >= budget) || (await costBudgetExhausted(context));
}

/**
 * Ends the experiment: writes `evolution/best/<namespace>` at the best commit (pushed when
 * WORKER_REPO_PUSH is on), marks the experiment finished and logs the final summary. `by` names
 * the process that finished it, for the log.
 */
export async function finishExperiment(context: SchedulerContext, rootCommit: string, workerId: string): Promise<FinalSummary> {
  const { settings, pool, logger, experimentId, archive, repository } = context;
  const best = await archive.best();
  let branch: string | null = null;
  let pushed = false;
  if (best) {
    branch = bestBranchName(settings.experiment);
    try {
      pushed = (await repository.writeBranch(branch, best.commitHash)).pushed;
    } catch (error) {
      logger.error({ err: error, branch, commit: best.commitHash }, 'could not write the best branch');
      branch = null;
    }
  }
  await markExperimentFinished(pool, experimentId);
  const [jobs, coverage, baselines] = await Promise.all([
    countByStatus(pool, experimentId),
    archive.coverage(),
    findJobsByKind(pool, experimentId, 'baseline'),
  ]);
  const baselineJob = baselines.at(-1);
  let baseline: FinalSummary['baseline'] = null;
  if (baselineJob) {
    const metrics = await getMetrics(pool, experimentId, baselineJob.baseCommit);
    const fitness = metrics.find((metric) => metric.name === settings.archive.fitnessMetric)?.value ?? null;
    baseline = { status: baselineJob.status, fitness: baselineJob.status === 'succeeded' ? fitness : null };
  }
  const bestMetrics = best ? await getMetrics(pool, experimentId, best.commitHash) : [];
  const summary: FinalSummary = {
    experiment: experimentId,
    namespace: settings.experiment.namespace,
    rootCommit,
    jobs,
    baseline,
    best: best
      ? {
          commit: best.commitHash,
          fitness: best.fitness,
          metric: settings.archive.fitnessMetric,
          island: best.island,
          cell: best.cell,
          jobId: best.jobId,
          metrics: Object.fromEntries(bestMetrics.map((metric) => [metric.name, metric.value])),
        }
      : null,
    archive: { ...coverage, islands: settings.archive.islands },
    branch,
    pushed,
  };
  logger.info({ summary, by: workerId }, 'experiment finished');
  return summary;
}
