import { countEvolutionJobs, countUnfinished, databaseNow } from '../shared/db/jobs.ts';
import type { Pool } from '../shared/db/pool.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { PgBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import { MapElitesArchive, type IngestionOutcome } from './archive/archive.ts';
import { EmbeddingDescriptor, MetricsDescriptor, type BehaviorDescriptor } from './archive/descriptor.ts';
import { costBudgetExhausted } from './budget.ts';
import type { SchedulerContext } from './context.ts';
import { dispatchStage } from './dispatch.ts';
import { HashedNgramEmbedder, type FileEmbedder } from './embedding/embedder.ts';
import { RepositoryStateEmbedding } from './embedding/repository-state.ts';
import { experimentIsDone, finishExperiment, type FinalSummary } from './finish.ts';
import { checkRunHealth, type RunStop } from './health.ts';
import { ingestStage } from './ingest.ts';
import { JobRefPruner } from './job-refs.ts';
import { NotesPublisher, type NotesResult } from './notes.ts';
import { seedFromString } from './random.ts';
import { reconcileStage, type ReconcileResult } from './reconcile.ts';
import { SchedulerRepository } from './repository.ts';
import { scheduleStage } from './schedule.ts';
import { startExperiment } from './start.ts';

export interface EvolutionSchedulerOptions {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly logger: Logger;
  readonly workerId: string;
  /** See `SchedulerContext.heartbeatsTrustedAfter`. */
  readonly heartbeatsTrustedAfter?: number;
  /** The file embedder for the `embedding` descriptor; defaults to the offline hashed n-grams. */
  readonly embedder?: FileEmbedder;
}

/** The stages of a tick, in order; each is a file of its own (`ingest.ts`, `dispatch.ts`, ...). */
export const STAGES = ['ingest', 'dispatch', 'reconcile', 'schedule'] as const;
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
  readonly reconciled: ReconcileResult;
  readonly scheduled: number;
  /** After the tick: pending + queued + running, the baseline included. */
  readonly unfinished: number;
  /** After the tick: evolution jobs in any status, what the budget counts. */
  readonly evolutionJobs: number;
}

/**
 * Keeps one experiment's evolution going. `start()` prepares the experiment (`start.ts`); each
 * `tick()` runs the four stages in order: ingest finished jobs into the MAP-Elites archive
 * (`ingest.ts`), dispatch pending jobs to the queue (`dispatch.ts`), reconcile jobs with what
 * became of their queue jobs (`reconcile.ts`), and schedule new jobs sampled from the archive
 * within the caps and the budget (`schedule.ts`, `budget.ts`). Every stage is isolated: one that
 * throws is logged and reported, and the others still run. `finish()` ends it (`finish.ts`).
 */
export class EvolutionScheduler {
  readonly settings: Settings;
  readonly experimentId: string;
  readonly repository: SchedulerRepository;
  readonly archive: MapElitesArchive;
  private readonly context: SchedulerContext;
  private readonly workerId: string;
  private root: string | undefined;
  private finishing: Promise<FinalSummary> | undefined;
  /** When this scheduler started, by the database's clock: the circuit breaker counts jobs since. */
  private startedAt: Date | undefined;
  /** Set once the baseline failed or the circuit breaker tripped: nothing more is scheduled. */
  private stop: RunStop | undefined;
  private readonly notes: NotesPublisher;
  private readonly jobRefs: JobRefPruner;

  constructor(options: EvolutionSchedulerOptions) {
    const { settings, pool, logger } = options;
    this.settings = settings;
    this.workerId = options.workerId;
    this.experimentId = settings.experiment.uuid;
    const seed = settings.archive.samplerSeed ?? seedFromString(this.experimentId);
    this.repository = new SchedulerRepository(settings);
    this.archive = new MapElitesArchive({
      pool,
      experimentId: this.experimentId,
      settings: settings.archive,
      descriptor: this.createDescriptor(pool, options.embedder),
      seed,
      logger,
      ensureCommit: (commit) => this.repository.ensureCommit(commit),
    });
    this.context = { settings, experimentId: this.experimentId, pool, boss: options.boss, logger, repository: this.repository, archive: this.archive, seed, heartbeatsTrustedAfter: options.heartbeatsTrustedAfter };
    this.notes = new NotesPublisher(this.context, () => this.rootCommit);
    this.jobRefs = new JobRefPruner(this.context);
  }

  private createDescriptor(pool: Pool, embedder: FileEmbedder | undefined): BehaviorDescriptor {
    const archive = this.settings.archive;
    if (archive.behaviorDescriptor === 'metrics') return new MetricsDescriptor(archive);
    const state = new RepositoryStateEmbedding({
      db: pool,
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

  /** Experiment start (`start.ts`): the clone, the root commit, the archive and the baseline job. */
  async start(): Promise<void> {
    this.root = await startExperiment(this.context);
    this.startedAt = await databaseNow(this.context.pool);
  }

  /** Why the run stopped (the baseline failed, the circuit breaker tripped), if it did. */
  get stopped(): RunStop | undefined {
    return this.stop;
  }

  /** The schedule stage, behind the baseline gate and the circuit breaker (`health.ts`). */
  private async scheduleIfHealthy(): Promise<number> {
    if (this.stop) return 0;
    const health = await checkRunHealth(this.context, this.startedAt ?? new Date(0));
    if (health.state === 'waiting-for-baseline') {
      this.context.logger.debug('waiting for the baseline evaluation to succeed before scheduling evolution jobs');
      return 0;
    }
    if (health.state === 'stopped') {
      this.stop = health.stop;
      this.context.logger.error({ stopKind: health.stop.kind }, `run stopped, nothing more is scheduled: ${health.stop.reason}`);
      return 0;
    }
    return scheduleStage(this.context, this.rootCommit);
  }

  /** One pass of ingest → dispatch → reconcile → schedule. */
  async tick(): Promise<TickSummary> {
    const { context } = this;
    const stages: StageReport[] = [];
    const run = async <T>(stage: StageName, fn: () => Promise<T>, fallback: T): Promise<T> => {
      const started = performance.now();
      try {
        const result = await fn();
        stages.push({ stage, ok: true, ms: Math.round(performance.now() - started) });
        return result;
      } catch (error) {
        context.logger.error({ err: error, stage }, `scheduler stage ${stage} failed`);
        stages.push({ stage, ok: false, ms: Math.round(performance.now() - started), error: errorMessage(error) });
        return fallback;
      }
    };
    const ingested = await run('ingest', () => ingestStage(context), [] as Array<IngestionOutcome | Error>);
    const dispatched = await run('dispatch', () => dispatchStage(context), 0);
    const reconciled = await run('reconcile', () => reconcileStage(context), { checked: 0, failed: 0, resent: 0 });
    const scheduled = await run('schedule', () => this.scheduleIfHealthy(), 0);
    const [unfinished, evolutionJobs] = await Promise.all([
      countUnfinished(context.pool, this.experimentId).catch(() => -1),
      countEvolutionJobs(context.pool, this.experimentId).catch(() => -1),
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
    context.logger.info({ ...summary, stages: stages.map((s) => `${s.stage}:${s.ok ? 'ok' : 'failed'}:${s.ms}ms`) }, 'tick');
    return summary;
  }

  /**
   * Writes and pushes the git notes of what was ingested since the last call (`notes.ts`), then
   * prunes finished jobs' branches from the remote (`job-refs.ts`); the loop calls it after every
   * tick. A failure is logged and tried again next time, never thrown: the
   * database stays the truth while the remote catches up.
   */
  async publishNotes(): Promise<NotesResult> {
    let result: NotesResult = { noted: 0, pushed: false };
    try {
      result = await this.notes.publish();
    } catch (error) {
      this.context.logger.warn({ err: error }, `git notes not published (will try again after the next tick): ${errorMessage(error)}`);
    }
    // Finished jobs' branches leave the remote, their commits kept by one branch (`job-refs.ts`).
    await this.jobRefs.prune().catch((error: unknown) => {
      this.context.logger.warn({ err: error }, `finished jobs' branches not pruned from the remote (will try again after the next tick): ${errorMessage(error)}`);
    });
    return result;
  }

  /**
   * Waits for a refit computing off the tick and applies it (with the migration due at its
   * ingestion), so a scheduler that stops leaves the archive as a replay of its ingestions does.
   * Called by the loop when it stops; a failure is logged, never thrown.
   */
  async settle(): Promise<void> {
    if (!this.archive.refitPending) return;
    try {
      await this.archive.applyPendingRefit({ wait: true });
    } catch (error) {
      this.context.logger.warn({ err: error }, `the pending refit was not applied before stopping (the next scheduler applies it): ${errorMessage(error)}`);
      return;
    }
    // The model it applied goes into the notes now, or a rebuild would lack it.
    await this.publishNotes();
  }

  /** LORELEY_MAX_COST_USD is reached (`budget.ts`). */
  costBudgetExhausted(): Promise<boolean> {
    return costBudgetExhausted(this.context);
  }

  /**
   * A budget (jobs or cost) is spent, every job has finished and every success has been ingested;
   * or the run was stopped (it ends at once: jobs in flight are handed back by the drain). Not
   * while a refit is pending: the next ticks apply it first.
   */
  async isFinished(): Promise<boolean> {
    if (this.stop !== undefined) return true;
    // A refit due at the last ingestion is applied before the end, as an inline one would be.
    return !this.archive.refitPending && experimentIsDone(this.context);
  }

  /** Ends the experiment once (`finish.ts`); a failed attempt may be tried again. */
  finish(): Promise<FinalSummary> {
    this.finishing ??= finishExperiment(this.context, this.rootCommit, this.workerId, this.stop).catch((error) => {
      this.finishing = undefined;
      throw error;
    });
    return this.finishing;
  }
}
