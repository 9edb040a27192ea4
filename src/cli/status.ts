import { countByStatus, JOB_STATUSES, type JobStatus } from '../shared/db/jobs.ts';
import { getExperiment } from '../shared/db/experiments.ts';
import { createPool, PG_UNDEFINED_TABLE, pgErrorCode } from '../shared/db/pool.ts';
import { getMetrics } from '../shared/db/results.ts';
import { bestByMetric, jobCounts } from '../shared/db/status.ts';
import { usageTotals, type UsageTotals } from '../shared/db/usage.ts';
import { listHosts } from '../shared/db/hosts.ts';
import { databaseNow } from '../shared/db/notes.ts';
import { listWorkers } from '../shared/db/workers.ts';
import { formatProcesses } from './status-hosts.ts';
import { embeddedDatabaseDirectory, NoEmbeddedCluster, openEmbeddedForReading } from '../shared/embedded-database.ts';
import { UserError } from '../shared/errors.ts';
import type { ReadOnlySettings } from '../shared/settings/index.ts';

/**
 * `loreley status`: one screen about an experiment, read from the database: jobs by status,
 * the best commit, and every process that reported in.
 */

/**
 * What `loreley status --json` prints: the one documented shape (README "During and after a run").
 * Times are ISO-8601 strings.
 */
export interface StatusReport {
  readonly experiment: { readonly id: string; readonly slug: string; readonly namespace: string; readonly rootCommit: string | null; readonly finishedAt: string | null };
  /** Evolution jobs by status (the baseline is not one of them); `budget` is SCHEDULER_MAX_TOTAL_JOBS. */
  readonly jobs: Record<JobStatus, number> & { readonly total: number; readonly budget: number | null };
  readonly fitness: {
    readonly metric: string;
    readonly baseline: number | null;
    readonly best: { readonly commitHash: string; readonly value: number; readonly jobId: string | null } | null;
  };
  readonly workers: ReadonlyArray<{
    readonly host: string; readonly workerId: string; readonly role: string; readonly pid: number; readonly state: string;
    readonly currentJobId: string | null; readonly lastHeartbeat: string; readonly startedAt: string;
  }>;
  /** One row per supervisor (host id), when the experiment has several hosts or one supervisor. */
  readonly hosts: ReadonlyArray<{
    readonly host: string; readonly machine: string; readonly pid: number; readonly state: string; readonly workers: number;
    readonly scheduler: boolean; readonly lastHeartbeat: string; readonly startedAt: string;
  }>;
  readonly usage: UsageTotals & { readonly maxCostUsd: number | null };
  /** The database's clock when this was read: ages are measured against it, not this host's clock. */
  readonly now: string;
  /** Where the numbers came from: DATABASE_URL, a running supervisor's embedded server, or one started for this command. */
  readonly database: 'url' | 'embedded-running' | 'embedded-started';
}

export async function collectStatus(settings: ReadOnlySettings, url: string, database: StatusReport['database'] = 'url'): Promise<StatusReport> {
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
    const [statuses, counts, best, workers, usage, hosts, now] = await Promise.all([
      countByStatus(pool, experimentId),
      jobCounts(pool, experimentId),
      bestByMetric(pool, experimentId, fitness, settings.archive.fitnessHigherIsBetter),
      listWorkers(pool, experimentId),
      usageTotals(pool, experimentId),
      // A database from before the hosts table: no host rows to show.
      listHosts(pool, experimentId).catch(() => []),
      databaseNow(pool),
    ]);
    const rootMetrics = experiment.rootCommit ? await getMetrics(pool, experimentId, experiment.rootCommit) : [];
    const baseline = rootMetrics.find((metric) => metric.name === fitness)?.value ?? null;
    return {
      experiment: { id: experimentId, slug: settings.experiment.raw, namespace: settings.experiment.namespace, rootCommit: experiment.rootCommit, finishedAt: experiment.finishedAt?.toISOString() ?? null },
      jobs: { ...statuses, total: counts.total, budget: settings.scheduler.maxTotalJobs ?? null },
      fitness: { metric: fitness, baseline, best: best ?? null },
      workers: workers.map((w) => ({
        host: w.host, workerId: w.workerId, role: w.role, pid: w.pid, state: w.state, currentJobId: w.currentJobId,
        lastHeartbeat: w.lastHeartbeat.toISOString(), startedAt: w.startedAt.toISOString(),
      })),
      hosts: hosts.map((h) => ({
        host: h.host, machine: h.machine, pid: h.pid, state: h.state, workers: h.workers, scheduler: h.scheduler,
        lastHeartbeat: h.lastHeartbeat.toISOString(), startedAt: h.startedAt.toISOString(),
      })),
      usage: { ...usage, maxCostUsd: settings.agent.maxCostUsd ?? null },
      now: now.toISOString(),
      database,
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

/** `now` defaults to the database's clock at collection, so ages are right whatever this host's clock says. */
export function formatStatus(status: StatusReport, now: Date = status.now ? new Date(status.now) : new Date()): string {
  const { experiment, jobs, fitness, workers } = status;
  const lines = [
    `experiment  ${experiment.slug} (${experiment.namespace})${experiment.finishedAt ? `, finished ${experiment.finishedAt}` : ''}`,
    `root        ${experiment.rootCommit ?? '(not recorded yet)'}`,
    `jobs        ${jobs.total}${jobs.budget !== null ? ` of ${jobs.budget}` : ''}: ${JOB_STATUSES.map((s) => `${s} ${jobs[s] ?? 0}`).join(', ')}`,
    `fitness     ${fitness.metric}: best ${fitness.best ? `${fitness.best.value} at ${fitness.best.commitHash.slice(0, 12)}` : '-'}${fitness.baseline !== null ? `, baseline ${fitness.baseline}` : ''}`,
    usageLine(status.usage),
    'processes',
  ];
  lines.push(...formatProcesses(workers, status.hosts ?? [], now));
  return `${lines.join('\n')}\n`;
}

/**
 * The database to read: DATABASE_URL; else the embedded server a running supervisor started; else
 * the experiment's embedded cluster, started for this command and stopped by `release` (a
 * supervisor starting meanwhile waits for that, see embedded-database.ts).
 */
export async function openStatusDatabase(settings: ReadOnlySettings): Promise<{ url: string; source: StatusReport['database']; release(): Promise<void> }> {
  if (settings.database.url) return { url: settings.database.url, source: 'url', release: async () => undefined };
  const directory = embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace);
  try {
    const access = await openEmbeddedForReading({ directory });
    return { url: access.url, source: access.started ? 'embedded-started' : 'embedded-running', release: () => access.release() };
  } catch (error) {
    if (error instanceof NoEmbeddedCluster) {
      throw new UserError(`no DATABASE_URL and no running embedded database for this experiment, and no embedded database in ${directory} to start (run loreley-supervisor in the experiment's directory, or set DATABASE_URL)`);
    }
    throw error;
  }
}

/** Opens the database, runs `read`, and always stops a server started for it. */
export async function withStatusDatabase<T>(settings: ReadOnlySettings, read: (url: string, source: StatusReport['database']) => Promise<T>): Promise<T> {
  const access = await openStatusDatabase(settings);
  try {
    return await read(access.url, access.source);
  } finally {
    await access.release();
  }
}
