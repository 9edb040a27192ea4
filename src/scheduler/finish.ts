import { countAwaitingIngestion, countByStatus, countEvolutionJobs, countUnfinished, findJobsByKind, JOB_STATUSES, type JobStatus } from '../shared/db/jobs.ts';
import { markExperimentFinished } from '../shared/db/experiments.ts';
import { getMetrics } from '../shared/db/results.ts';
import { bestBranchName } from '../shared/experiment.ts';
import { costBudgetExhausted } from './budget.ts';
import type { SchedulerContext } from './context.ts';
import type { RunStop } from './health.ts';

/** A type alias (not an interface) so it passes as the IPC `done` message's summary. */
export type FinalSummary = {
  readonly experiment: string;
  readonly namespace: string;
  readonly rootCommit: string;
  /** Evolution jobs by status: what the job budget counts. */
  readonly jobs: Record<JobStatus, number>;
  /** Every job the run made by status, the baseline evaluations included (a failed baseline is a failure). */
  readonly allJobs: Record<JobStatus, number>;
  readonly baseline: { readonly status: JobStatus; readonly fitness: number | null; readonly attempts: number; readonly lastError: string | null } | null;
  /**
   * Set when the run ended without reaching its budget, or reached it with nothing that worked:
   * the baseline failed, the circuit breaker tripped, or every evolution job failed. The
   * supervisor prints the reason and exits non-zero.
   */
  readonly stopped: RunStop | null;
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
export async function finishExperiment(context: SchedulerContext, rootCommit: string, workerId: string, stop?: RunStop): Promise<FinalSummary> {
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
    baseline = { status: baselineJob.status, fitness: baselineJob.status === 'succeeded' ? fitness : null, attempts: baselineJob.attempts, lastError: baselineJob.lastError };
  }
  const allJobs = Object.fromEntries(JOB_STATUSES.map((status) => [status, jobs[status] + baselines.filter((job) => job.status === status).length])) as Record<JobStatus, number>;
  const evolutionJobs = JOB_STATUSES.reduce((sum, status) => sum + jobs[status], 0);
  let stopped: RunStop | null = stop ?? null;
  if (!stopped && evolutionJobs > 0 && jobs.succeeded === 0) {
    const last = (await findJobsByKind(pool, experimentId, 'evolution')).filter((job) => job.status === 'failed').at(-1);
    stopped = { kind: 'all-failed', reason: `all ${evolutionJobs} evolution jobs failed, none produced a result; the last error: ${last?.lastError ?? 'none recorded'}` };
  }
  const bestMetrics = best ? await getMetrics(pool, experimentId, best.commitHash) : [];
  const summary: FinalSummary = {
    experiment: experimentId,
    namespace: settings.experiment.namespace,
    rootCommit,
    jobs,
    allJobs,
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
    stopped,
  };
  if (stopped) logger.error({ summary, by: workerId, stopKind: stopped.kind }, `experiment stopped: ${stopped.reason}`);
  else logger.info({ summary, by: workerId }, 'experiment finished');
  return summary;
}
