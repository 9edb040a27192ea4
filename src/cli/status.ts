import { countByStatus, JOB_STATUSES } from '../shared/db/jobs.ts';
import { getExperiment } from '../shared/db/experiments.ts';
import { createPool, PG_UNDEFINED_TABLE, pgErrorCode } from '../shared/db/pool.ts';
import { getMetrics } from '../shared/db/results.ts';
import { bestByMetric, jobCounts } from '../shared/db/status.ts';
import { usageTotals, type UsageTotals } from '../shared/db/usage.ts';
import { listWorkers } from '../shared/db/workers.ts';
import { embeddedDatabaseDirectory, runningEmbeddedUrl } from '../shared/embedded-database.ts';
import { UserError } from '../shared/errors.ts';
import type { Settings } from '../shared/settings/index.ts';

/**
 * `loreley status`: one screen about an experiment, read from the database: jobs by status,
 * the best commit, and every process that reported in.
 */

function age(from: Date, now: Date): string {
  const seconds = Math.max(0, Math.round((now.getTime() - from.getTime()) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

export async function collectStatus(settings: Settings, url: string): Promise<Record<string, unknown>> {
  const pool = createPool({ url, settings: settings.database, applicationName: 'loreley-status', max: 1 });
  try {
    const experimentId = settings.experiment.uuid;
    // Only a database Loreley never ran on means "no data"; a connection or auth failure is reported.
    const experiment = await getExperiment(pool, experimentId).catch((error: unknown) => {
      if (pgErrorCode(error) === PG_UNDEFINED_TABLE) return undefined;
      throw error;
    });
    if (!experiment) throw new UserError(`experiment ${settings.experiment.raw} (${experimentId}) has no data in this database yet`);
    const fitness = settings.archive.fitnessMetric;
    const [statuses, counts, best, workers, usage] = await Promise.all([
      countByStatus(pool, experimentId),
      jobCounts(pool, experimentId),
      bestByMetric(pool, experimentId, fitness, settings.archive.fitnessHigherIsBetter),
      listWorkers(pool, experimentId),
      usageTotals(pool, experimentId),
    ]);
    const rootMetrics = experiment.rootCommit ? await getMetrics(pool, experimentId, experiment.rootCommit) : [];
    const baseline = rootMetrics.find((metric) => metric.name === fitness)?.value ?? null;
    return {
      experiment: { id: experimentId, slug: settings.experiment.raw, namespace: settings.experiment.namespace, rootCommit: experiment.rootCommit, finishedAt: experiment.finishedAt },
      jobs: { ...statuses, total: counts.total, budget: settings.scheduler.maxTotalJobs ?? null },
      fitness: { metric: fitness, baseline, best: best ?? null },
      workers,
      usage: { ...usage, maxCostUsd: settings.agent.maxCostUsd ?? null },
    };
  } finally {
    await pool.end().catch(() => undefined);
  }
}

function usageLine(usage: UsageTotals & { maxCostUsd: number | null }): string {
  const budget = usage.maxCostUsd !== null ? ` of $${usage.maxCostUsd.toFixed(2)}` : '';
  if (usage.calls === 0) return `models      no model calls${budget ? ` (budget${budget})` : ''}`;
  const models = usage.byModel.map((m) => `${m.model} ${m.calls} calls $${Number(m.costUsd).toFixed(4)}`).join('; ');
  return `models      ${usage.calls} calls (${usage.failedCalls} failed), ${usage.promptTokens} prompt + ${usage.completionTokens} completion tokens, $${usage.costUsd.toFixed(4)}${budget} [${models}]`;
}

export function formatStatus(status: Record<string, unknown>, now = new Date()): string {
  const experiment = status.experiment as { slug: string; namespace: string; rootCommit: string | null; finishedAt: Date | null };
  const jobs = status.jobs as Record<string, number | null>;
  const fitness = status.fitness as { metric: string; baseline: number | null; best: { commitHash: string; value: number } | null };
  const workers = status.workers as Array<{ host: string; workerId: string; role: string; pid: number; state: string; currentJobId: string | null; lastHeartbeat: Date }>;
  const lines = [
    `experiment  ${experiment.slug} (${experiment.namespace})${experiment.finishedAt ? `, finished ${experiment.finishedAt.toISOString()}` : ''}`,
    `root        ${experiment.rootCommit ?? '(not recorded yet)'}`,
    `jobs        ${jobs.total}${jobs.budget !== null ? ` of ${jobs.budget}` : ''}: ${JOB_STATUSES.map((s) => `${s} ${jobs[s] ?? 0}`).join(', ')}`,
    `fitness     ${fitness.metric}: best ${fitness.best ? `${fitness.best.value} at ${fitness.best.commitHash.slice(0, 12)}` : '-'}${fitness.baseline !== null ? `, baseline ${fitness.baseline}` : ''}`,
    usageLine(status.usage as UsageTotals & { maxCostUsd: number | null }),
    'processes',
  ];
  for (const w of workers) {
    lines.push(`  ${w.host}/${w.workerId.padEnd(16)} ${w.role.padEnd(9)} pid ${String(w.pid).padEnd(7)} ${w.state.padEnd(8)} ${w.currentJobId ? `job ${w.currentJobId.slice(0, 8)} ` : ''}seen ${age(w.lastHeartbeat, now)} ago`);
  }
  if (workers.length === 0) lines.push('  (none reported yet)');
  return `${lines.join('\n')}\n`;
}

/** The database to read: DATABASE_URL, else the embedded server a supervisor is running. */
export function statusDatabaseUrl(settings: Settings): string {
  if (settings.database.url) return settings.database.url;
  const url = runningEmbeddedUrl(embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace));
  if (!url) throw new UserError('no DATABASE_URL and no running embedded database for this experiment (start loreley-supervisor here, or set DATABASE_URL)');
  return url;
}
