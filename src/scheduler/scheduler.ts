import { ConfigurationError } from '../shared/errors.ts';
import { costBudgetSnapshot } from '../shared/db/usage.ts';
import { recordIngestionAttempt } from '../shared/db/jobs.ts';
import { costBudgetExhausted } from '../shared/llm/budget.ts';
import { bestBranchName } from '../shared/experiment.ts';
import { lockArchiveState, listElites, saveSamplerState, type Elite } from '../shared/db/archive.ts';
import { ensureExperiment, markExperimentFinished, recordExperimentRoot } from '../shared/db/experiments.ts';
import {
  countAwaitingIngestion, countByStatus, countEvolutionJobs, countUnfinished, countUnfinishedSeeds, findJobsByKind, insertJob,
  listAwaitingIngestion, listByStatus, lockForReconcile, lockPendingForDispatch, markFinished, markQueued, markResent, recordIngestion,
  type EvolutionJob, type JobStatus,
} from '../shared/db/jobs.ts';
import { withTransaction, type Pool } from '../shared/db/pool.ts';
import { getMetrics } from '../shared/db/results.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { transactionDb, type PgBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import { MapElitesArchive, type IngestionOutcome } from './archive/archive.ts';
import { EmbeddingDescriptor, MetricsDescriptor, type BehaviorDescriptor } from './archive/descriptor.ts';
import { HashedNgramEmbedder, type FileEmbedder } from './embedding/embedder.ts';
import { RepositoryStateEmbedding } from './embedding/repository-state.ts';
import { SeededRandom, seedFromString } from './random.ts';
import { normalizeUrl, SchedulerRepository } from './repository.ts';
import { sample } from './sampler.ts';

export { acquireSchedulerLock, type SchedulerLock } from './lock.ts';
export { runSchedulerLoop, type SchedulerLoopOptions, type SchedulerLoopResult } from './loop.ts';

/** Ingestion of one job is tried this many times before its failure is final. */
const MAX_INGESTION_ATTEMPTS = 3;

export interface EvolutionSchedulerOptions {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly logger: Logger;
  readonly workerId: string;
  /** The file embedder for the `embedding` descriptor; defaults to the offline hashed n-grams. */
  readonly embedder?: FileEmbedder;
}

export const STAGES = ['ingest', 'dispatch', 'measure', 'schedule'] as const;
export type StageName = (typeof STAGES)[number];

export interface StageReport {
  readonly stage: StageName;
  readonly ok: boolean;
  readonly ms: number;
  readonly error?: string;
}

export interface TickSummary {
  readonly stages: StageReport[];
  readonly ingested: number;
  readonly rejected: number;
  readonly ingestFailed: number;
  readonly dispatched: number;
  readonly reconciled: { readonly checked: number; readonly failed: number; readonly resent: number };
  readonly scheduled: number;
  /** After the tick: pending + queued + running, the baseline included. */
  readonly unfinished: number;
  /** After the tick: evolution jobs in any status, what the budget counts. */
  readonly evolutionJobs: number;
}

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

interface MeasureResult {
  checked: number;
  failed: number;
  resent: number;
}

/**
 * Keeps one experiment's evolution going: ingest finished jobs into the MAP-Elites archive,
 * dispatch pending jobs to the queue, reconcile jobs whose queue job is gone, and schedule new
 * jobs sampled from the archive, within the caps and the budget. Every stage is isolated: one
 * that throws is logged and reported, and the others still run.
 */
export class EvolutionScheduler {
  readonly settings: Settings;
  readonly experimentId: string;
  readonly repository: SchedulerRepository;
  readonly archive: MapElitesArchive;
  private readonly pool: Pool;
  private readonly boss: PgBoss;
  private readonly logger: Logger;
  private readonly workerId: string;
  private readonly seed: number;
  private root: string | undefined;
  private finishing: Promise<FinalSummary> | undefined;

  constructor(options: EvolutionSchedulerOptions) {
    this.settings = options.settings;
    this.pool = options.pool;
    this.boss = options.boss;
    this.logger = options.logger;
    this.workerId = options.workerId;
    this.experimentId = options.settings.experiment.uuid;
    this.seed = options.settings.archive.samplerSeed ?? seedFromString(this.experimentId);
    this.repository = new SchedulerRepository(options.settings);
    this.archive = new MapElitesArchive({
      pool: this.pool,
      experimentId: this.experimentId,
      settings: this.settings.archive,
      descriptor: this.createDescriptor(options.embedder),
      seed: this.seed,
      logger: this.logger,
      ensureCommit: (commit) => this.repository.ensureCommit(commit),
    });
  }

  private createDescriptor(embedder: FileEmbedder | undefined): BehaviorDescriptor {
    const archive = this.settings.archive;
    if (archive.behaviorDescriptor === 'metrics') return new MetricsDescriptor(archive);
    const state = new RepositoryStateEmbedding({
      db: this.pool,
      experimentId: this.experimentId,
      repository: this.repository.directory,
      embedder: embedder ?? new HashedNgramEmbedder(archive.embedding.dimensions),
      settings: archive.embedding,
    });
    return new EmbeddingDescriptor(archive, state, undefined);
  }

  get rootCommit(): string {
    if (!this.root) throw new Error('the scheduler has not started: call start() first');
    return this.root;
  }

  /**
   * Experiment start: the scheduler clone, the root commit (recorded at first start, checked
   * against the settings on every later one), the archive state and the root's baseline job.
   */
  async start(): Promise<void> {
    const { settings } = this;
    const experiment = await ensureExperiment(this.pool, settings.experiment);
    const remote = settings.worker.repo.remoteUrl;
    const label = `experiment ${settings.experiment.raw} (${this.experimentId})`;
    if (experiment.repositoryUrl && normalizeUrl(experiment.repositoryUrl) !== normalizeUrl(remote)) {
      throw new ConfigurationError(`${label} was started on repository ${experiment.repositoryUrl}, but WORKER_REPO_REMOTE_URL is ${remote}: use the original repository or another EXPERIMENT_ID`);
    }
    await this.repository.prepare();

    let root: string;
    const configured = settings.archive.rootCommit;
    const configuredCommit = configured === undefined
      ? undefined
      : (await this.repository.resolve(configured)) ?? (await this.repository.resolve(`refs/remotes/origin/${configured}`));
    if (configured !== undefined && configuredCommit === undefined) {
      throw new ConfigurationError(`MAPELITES_EXPERIMENT_ROOT_COMMIT=${configured} is not a commit of ${remote}`);
    }
    if (experiment.rootCommit) {
      root = experiment.rootCommit;
      if (configuredCommit !== undefined && configuredCommit !== root) {
        throw new ConfigurationError(`${label} has root commit ${root}, but MAPELITES_EXPERIMENT_ROOT_COMMIT=${configured} is ${configuredCommit}: an experiment's root never changes; use another EXPERIMENT_ID`);
      }
      await this.repository.ensureCommit(root).catch(() => {
        throw new ConfigurationError(`${label} has root commit ${root}, which ${remote} does not contain: is WORKER_REPO_REMOTE_URL the experiment's repository?`);
      });
      if (experiment.branch && experiment.branch !== settings.worker.repo.branch) {
        this.logger.warn({ recorded: experiment.branch, configured: settings.worker.repo.branch }, 'WORKER_REPO_BRANCH differs from the branch recorded at the first start; the recorded root commit is kept');
      }
    } else {
      const tip = configuredCommit ?? (await this.repository.tip());
      if (!tip) throw new ConfigurationError(`branch ${settings.worker.repo.branch} does not exist on ${remote}: set WORKER_REPO_BRANCH or MAPELITES_EXPERIMENT_ROOT_COMMIT`);
      const recorded = await recordExperimentRoot(this.pool, this.experimentId, remote, settings.worker.repo.branch, tip);
      root = recorded.rootCommit ?? tip;
      this.logger.info({ root, source: configuredCommit ? 'MAPELITES_EXPERIMENT_ROOT_COMMIT' : `tip of ${settings.worker.repo.branch}` }, 'experiment root recorded');
    }
    this.root = root;

    await this.archive.open();
    const baselines = await findJobsByKind(this.pool, this.experimentId, 'baseline');
    if (baselines.length === 0) {
      const job = await insertJob(this.pool, {
        experimentId: this.experimentId,
        kind: 'baseline',
        baseCommit: root,
        goal: settings.scheduler.goal ?? null,
        payload: { baseline: true },
        island: 0,
        priority: settings.scheduler.baselinePriority,
      });
      this.logger.info({ jobId: job.id, root }, 'baseline evaluation of the root scheduled');
    }
  }

  /** One pass of ingest → dispatch → measure → schedule. */
  async tick(): Promise<TickSummary> {
    const stages: StageReport[] = [];
    const run = async <T>(stage: StageName, fn: () => Promise<T>, fallback: T): Promise<T> => {
      const started = performance.now();
      try {
        const result = await fn();
        stages.push({ stage, ok: true, ms: Math.round(performance.now() - started) });
        return result;
      } catch (error) {
        this.logger.error({ err: error, stage }, `scheduler stage ${stage} failed`);
        stages.push({ stage, ok: false, ms: Math.round(performance.now() - started), error: errorMessage(error) });
        return fallback;
      }
    };
    const ingested = await run('ingest', () => this.ingestStage(), [] as Array<IngestionOutcome | Error>);
    const dispatched = await run('dispatch', () => this.dispatchStage(), 0);
    const reconciled = await run('measure', () => this.measureStage(), { checked: 0, failed: 0, resent: 0 });
    const scheduled = await run('schedule', () => this.scheduleStage(), 0);
    const [unfinished, evolutionJobs] = await Promise.all([
      countUnfinished(this.pool, this.experimentId).catch(() => -1),
      countEvolutionJobs(this.pool, this.experimentId).catch(() => -1),
    ]);
    const summary: TickSummary = {
      stages,
      ingested: ingested.filter((o) => !(o instanceof Error) && o.status === 'ingested').length,
      rejected: ingested.filter((o) => !(o instanceof Error) && o.status === 'rejected').length,
      ingestFailed: ingested.filter((o) => o instanceof Error).length,
      dispatched,
      reconciled,
      scheduled,
      unfinished,
      evolutionJobs,
    };
    this.logger.info({ ...summary, stages: stages.map((s) => `${s.stage}:${s.ok ? 'ok' : 'failed'}:${s.ms}ms`) }, 'tick');
    return summary;
  }

  /** Ingests succeeded jobs into the archive, oldest first; a failure is recorded on its job. */
  protected async ingestStage(): Promise<Array<IngestionOutcome | Error>> {
    const jobs = await listAwaitingIngestion(this.pool, this.experimentId, this.settings.scheduler.ingestBatchSize);
    const outcomes: Array<IngestionOutcome | Error> = [];
    for (const job of jobs) {
      try {
        const outcome = await this.archive.ingest(job);
        this.logger.info({ jobId: job.id, commit: outcome.commit, fitness: outcome.fitness, status: outcome.status, reason: outcome.reason }, 'job ingested');
        outcomes.push(outcome);
      } catch (error) {
        const reason = `ingestion failed: ${errorMessage(error)}`;
        const attempts = await recordIngestionAttempt(this.pool, job.id, reason);
        if (attempts >= MAX_INGESTION_ATTEMPTS) {
          this.logger.warn({ jobId: job.id, err: error, attempts }, `${reason} (giving up)`);
          await recordIngestion(this.pool, job.id, { status: 'failed', delta: null, cell: null, reason });
        } else {
          this.logger.warn({ jobId: job.id, err: error, attempts }, `${reason} (will try again next tick)`);
        }
        outcomes.push(error instanceof Error ? error : new Error(reason));
      }
    }
    return outcomes;
  }

  /**
   * Sends pending jobs, highest priority then oldest, to the queue; each queue job and its row's
   * `queued` status commit in one transaction, so neither exists without the other.
   */
  protected async dispatchStage(): Promise<number> {
    const queue = this.settings.queue.name;
    return withTransaction(this.pool, async (client) => {
      const jobs = await lockPendingForDispatch(client, this.experimentId, this.settings.scheduler.dispatchBatchSize);
      for (const job of jobs) {
        const queueJobId = await this.boss.send(queue, { jobId: job.id }, { db: transactionDb(client), priority: job.priority });
        if (!queueJobId) throw new Error(`the queue ${queue} refused job ${job.id}`);
        await markQueued(client, job.id, queueJobId);
      }
      if (jobs.length > 0) this.logger.debug({ jobs: jobs.map((job) => job.id) }, 'jobs dispatched');
      return jobs.length;
    });
  }

  /**
   * Reconciles queued and running jobs with their queue jobs. A queue job that failed (its retries
   * spent, or expired), was cancelled, or completed while the row never finished marks the job
   * failed; a queue job that vanished is sent again while the job was only queued (up to
   * SCHEDULER_MAX_RESENDS times) and marks it failed when it was running.
   */
  protected async measureStage(): Promise<MeasureResult> {
    const result: MeasureResult = { checked: 0, failed: 0, resent: 0 };
    const queue = this.settings.queue.name;
    const jobs = await listByStatus(this.pool, this.experimentId, ['queued', 'running'], 10_000);
    for (const job of jobs) {
      result.checked += 1;
      const queueJob = job.queueJobId ? (await this.boss.findJobs(queue, { id: job.queueJobId }))[0] : undefined;
      let action: { kind: 'fail'; reason: string } | { kind: 'resend'; reason: string } | undefined;
      if (!queueJob) {
        const vanished = `its queue job ${job.queueJobId ?? '(none)'} vanished from ${queue}`;
        if (job.status === 'running') action = { kind: 'fail', reason: `${vanished} while the job was running` };
        else if (resendsOf(job) >= this.settings.scheduler.maxResends) action = { kind: 'fail', reason: `${vanished}, and it was already sent again ${resendsOf(job)} times` };
        else action = { kind: 'resend', reason: `${vanished}; sent again` };
      } else if (queueJob.state === 'failed') {
        const output = describeOutput(queueJob.output);
        action = { kind: 'fail', reason: `the queue gave up on it (failed or expired after ${queueJob.retryCount + 1} attempt(s))${output ? `: ${output}` : ''}${job.lastError ? ` (last error: ${job.lastError})` : ''}` };
      } else if (queueJob.state === 'cancelled') {
        action = { kind: 'fail', reason: 'its queue job was cancelled' };
      } else if (queueJob.state === 'completed') {
        action = { kind: 'fail', reason: `its queue job completed but the job was left ${job.status}${job.lastError ? ` (last error: ${job.lastError})` : ''}` };
      }
      if (!action) continue;
      const applied = await withTransaction(this.pool, async (client) => {
        const current = await lockForReconcile(client, job.id);
        // Changed since we looked (the worker finished it, or is holding it now): not stuck.
        if (!current || current.status !== job.status || current.queueJobId !== job.queueJobId) return false;
        if (action.kind === 'fail') {
          await markFinished(client, job.id, 'failed', action.reason);
        } else {
          const fresh = await this.boss.send(queue, { jobId: job.id }, { db: transactionDb(client), priority: job.priority });
          if (!fresh) throw new Error(`the queue ${queue} refused job ${job.id}`);
          await markResent(client, job.id, fresh, action.reason);
        }
        return true;
      });
      if (!applied) continue;
      if (action.kind === 'fail') result.failed += 1;
      else result.resent += 1;
      this.logger.warn({ jobId: job.id, status: job.status, queueJobId: job.queueJobId, action: action.kind, reason: action.reason }, 'stuck job reconciled');
    }
    return result;
  }

  /**
   * Schedules new jobs within the unfinished cap, the batch size and the budget. While the archive
   * is empty they are seeds from the root (at most MAPELITES_SEED_POPULATION_SIZE unfinished at
   * once); after that each is sampled from its island, islands taken round-robin. The sampler's
   * random state and island cursor are saved with the jobs, so a restart continues the sequence.
   */
  protected async scheduleStage(): Promise<number> {
    const { scheduler, archive } = this.settings;
    const root = this.rootCommit;
    const [unfinished, total] = await Promise.all([countUnfinished(this.pool, this.experimentId), countEvolutionJobs(this.pool, this.experimentId)]);
    let capacity = Math.min(scheduler.maxUnfinishedJobs - unfinished, scheduler.scheduleBatchSize);
    if (scheduler.maxTotalJobs !== undefined) capacity = Math.min(capacity, scheduler.maxTotalJobs - total);
    if (capacity <= 0) return 0;
    if (await this.costBudgetExhausted()) return 0;
    const goal = scheduler.goal ?? null;

    const created = await withTransaction(this.pool, async (client) => {
      const state = await lockArchiveState(client, this.experimentId, this.seed);
      const random = new SeededRandom(state.rngState);
      let cursor = state.nextIsland;
      const elites = await listElites(client, this.experimentId);
      const byIsland = new Map<number, Elite[]>();
      for (const elite of elites) byIsland.set(elite.island, [...(byIsland.get(elite.island) ?? []), elite]);
      const jobs: EvolutionJob[] = [];
      const nextIsland = () => {
        const island = cursor % archive.islands;
        cursor = (cursor + 1) % archive.islands;
        return island;
      };
      if (elites.length === 0) {
        const seeds = Math.min(capacity, archive.seedPopulationSize - (await countUnfinishedSeeds(client, this.experimentId)));
        for (let i = 0; i < seeds; i++) {
          const island = nextIsland();
          jobs.push(await insertJob(client, { experimentId: this.experimentId, baseCommit: root, goal, island, payload: { seed: true, sampler: { island } } }));
        }
      } else {
        for (let i = 0; i < capacity; i++) {
          const island = nextIsland();
          const picked = sample(byIsland.get(island) ?? [], archive.inspirationCount, archive.neighborMaxRadius, random);
          if (!picked) {
            jobs.push(await insertJob(client, { experimentId: this.experimentId, baseCommit: root, goal, island, payload: { sampler: { island, fromRoot: true } } }));
            continue;
          }
          jobs.push(await insertJob(client, {
            experimentId: this.experimentId,
            baseCommit: picked.base.commitHash,
            inspirations: picked.inspirations.map((elite) => elite.commitHash),
            goal,
            island,
            payload: {
              sampler: {
                island,
                baseCell: picked.base.cell,
                baseFitness: picked.base.fitness,
                radius: picked.radius,
                inspirationCells: picked.inspirations.map((elite) => elite.cell),
              },
            },
          }));
        }
      }
      await saveSamplerState(client, this.experimentId, random.state, cursor);
      return jobs;
    });
    if (created.length > 0) this.logger.info({ jobs: created.map((job) => ({ id: job.id, base: job.baseCommit.slice(0, 12), island: job.island })) }, 'jobs scheduled');
    return created.length;
  }

  /**
   * LORELEY_MAX_COST_USD: model spending so far, plus the jobs in flight at the average cost of a
   * finished one, has reached the budget.
   */
  async costBudgetExhausted(): Promise<boolean> {
    const maxCostUsd = this.settings.agent.maxCostUsd;
    if (maxCostUsd === undefined) return false;
    const snapshot = await costBudgetSnapshot(this.pool, this.experimentId);
    const exhausted = costBudgetExhausted({ ...snapshot, maxCostUsd });
    if (exhausted) this.logger.debug({ ...snapshot, maxCostUsd }, 'cost budget reached: no new jobs');
    return exhausted;
  }

  /** A budget (jobs or cost) is spent, every job has finished and every success has been ingested. */
  async isFinished(): Promise<boolean> {
    const budget = this.settings.scheduler.maxTotalJobs;
    if (budget === undefined && this.settings.agent.maxCostUsd === undefined) return false;
    const [total, unfinished, awaiting] = await Promise.all([
      countEvolutionJobs(this.pool, this.experimentId),
      countUnfinished(this.pool, this.experimentId),
      countAwaitingIngestion(this.pool, this.experimentId),
    ]);
    if (unfinished > 0 || awaiting > 0) return false;
    return (budget !== undefined && total >= budget) || (await this.costBudgetExhausted());
  }

  /**
   * Ends the experiment once: writes `evolution/best/<namespace>` at the best commit (pushed when
   * workers push), marks the experiment finished and logs the final summary.
   */
  finish(): Promise<FinalSummary> {
    this.finishing ??= this.writeFinish().catch((error) => {
      this.finishing = undefined;
      throw error;
    });
    return this.finishing;
  }

  private async writeFinish(): Promise<FinalSummary> {
    const { settings } = this;
    const best = await this.archive.best();
    let branch: string | null = null;
    let pushed = false;
    if (best) {
      branch = bestBranchName(settings.experiment);
      try {
        pushed = (await this.repository.writeBranch(branch, best.commitHash)).pushed;
      } catch (error) {
        this.logger.error({ err: error, branch, commit: best.commitHash }, 'could not write the best branch');
        branch = null;
      }
    }
    await markExperimentFinished(this.pool, this.experimentId);
    const [jobs, coverage, baselines] = await Promise.all([
      countByStatus(this.pool, this.experimentId),
      this.archive.coverage(),
      findJobsByKind(this.pool, this.experimentId, 'baseline'),
    ]);
    const baselineJob = baselines.at(-1);
    let baseline: FinalSummary['baseline'] = null;
    if (baselineJob) {
      const metrics = await getMetrics(this.pool, this.experimentId, baselineJob.baseCommit);
      const fitness = metrics.find((metric) => metric.name === settings.archive.fitnessMetric)?.value ?? null;
      baseline = { status: baselineJob.status, fitness: baselineJob.status === 'succeeded' ? fitness : null };
    }
    const bestMetrics = best ? await getMetrics(this.pool, this.experimentId, best.commitHash) : [];
    const summary: FinalSummary = {
      experiment: this.experimentId,
      namespace: settings.experiment.namespace,
      rootCommit: this.rootCommit,
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
    this.logger.info({ summary, by: this.workerId }, 'experiment finished');
    return summary;
  }
}

function resendsOf(job: EvolutionJob): number {
  const value = (job.payload as { resends?: unknown }).resends;
  return typeof value === 'number' ? value : 0;
}

function describeOutput(output: unknown): string {
  if (output === null || output === undefined) return '';
  // A failed handler's error is stored as the output; pg-boss's own expiry stores { value: { message } }.
  const message = (value: unknown): string | undefined =>
    typeof value === 'object' && value !== null && typeof (value as { message?: unknown }).message === 'string' ? (value as { message: string }).message : undefined;
  const direct = message(output) ?? message((output as { value?: unknown }).value);
  if (direct) return direct;
  const text = JSON.stringify(output);
  return text === '{}' ? '' : text.slice(0, 500);
}
