import {
  bestElite, countCommitEmbeddings, countElitesByIsland, countIngestion, deleteElites, getArchiveState,
  getCommitEmbeddings, insertElites, listElites, lockArchiveState, lockArchiveVersion, lockElite, readArchiveVersion, saveProjection, topElites, upsertElite,
  type Elite,
} from '../../shared/db/archive.ts';
import { recordIngestion, type EvolutionJob } from '../../shared/db/jobs.ts';
import { withTransaction, type Pool, type Queryable } from '../../shared/db/pool.ts';
import { getMetrics } from '../../shared/db/results.ts';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import pLimit from 'p-limit';
import type { ArchiveSettings } from '../../shared/settings/archive.ts';
import { meanVector } from '../embedding/repository-state.ts';
import type { BehaviorDescriptor } from './descriptor.ts';
import { EmbeddingDescriptor } from './descriptor.ts';
import { seedFromString } from '../random.ts';
import { CvtTessellation, fitCentroids, GridTessellation, type PointModel, type Tessellation } from './cvt.ts';
import { EliteMirror } from './elites.ts';
import type { StoredProjection } from './fit.ts';
import { refitInThread } from './fit-thread.ts';
import { computeRefit, type RefitJob } from './refit-compute.ts';
import { replaceElites, type Replacement } from './replacement.ts';
import { cellKey } from './grid.ts';
import { isWhitenedPca } from './projection.ts';

/** Where an ingestion put a candidate, as recorded on the job (`ingestion_cell`). */
export interface Placement {
  readonly island: number;
  readonly cell: number[];
  readonly descriptor: number[];
  readonly placed: boolean;
  /** Improvement over the cell's previous elite in the fitness direction; null for a new cell. */
  readonly delta: number | null;
  readonly incumbent: { commit: string; fitness: number } | null;
}

export interface IngestionOutcome {
  readonly jobId: string;
  readonly commit: string;
  readonly fitness: number;
  readonly status: 'ingested' | 'rejected';
  readonly placements: Placement[];
  readonly reason: string;
  /** Set when this ingestion triggered a projection refit or a migration. */
  readonly refit?: RefitSummary;
  readonly migrated?: number;
}

export interface RefitSummary {
  readonly samples: number;
  readonly elites: number;
  readonly moved: number;
  readonly dropped: number;
  /** Where the time went, in ms: reading the samples, fitting, re-placing the elites, writing them. */
  readonly ms?: { readonly samples: number; readonly fit: number; readonly place: number; readonly write: number };
}

export interface Candidate {
  readonly commit: string;
  readonly jobId: string | null;
  readonly fitness: number;
  readonly descriptor: number[];
  readonly source: string;
}

export interface ArchiveOptions {
  readonly pool: Pool;
  readonly experimentId: string;
  readonly settings: ArchiveSettings;
  readonly descriptor: BehaviorDescriptor;
  /** The sampler's initial random state, stored with the archive state on first use. */
  readonly seed: number;
  readonly logger?: Logger;
  /** Makes sure a commit can be read from the scheduler's clone before it is described. */
  readonly ensureCommit?: (commit: string) => Promise<void>;
}

const FIT_SAMPLE_LIMIT = 4096;

/**
 * How `ingest` handles a refit that falls due: `inline` fits and applies it before returning (the
 * default); `defer` starts it off the tick (`refitPending`) for the scheduler to apply later with
 * `applyPendingRefit`; `none` fits nothing (a replay, which passes the recorded models as `apply`).
 */
export type RefitMode = 'inline' | 'defer' | 'none';

export interface IngestOptions {
  readonly refit?: RefitMode;
  /**
   * Models to apply (`applyProjection`, in order) right after this ingestion and before the
   * migration due at it: where the run applied them. For a replay, with `refit: 'none'`.
   */
  readonly apply?: readonly StoredProjection[];
}

export type { StoredProjection };

/** A refit prepared off the tick: the model, and the elites re-placed under it from a snapshot. */
interface PreparedRefit {
  readonly model: StoredProjection;
  readonly samples: number;
  readonly ms: { readonly samples: number; readonly fit: number; readonly place: number };
  /** The elites' version the re-placement was computed from; applied as is only if still current. */
  readonly version: string;
  readonly placement: Replacement;
}

/** A refit due at ingestion `at`, computing or being written; the migration due at `at` waits for it too. */
interface PendingRefit {
  readonly at: number;
  readonly migrate: boolean;
  readonly started: number;
  settled: boolean;
  readonly result: Promise<RefitSummary | Error>;
}

/**
 * A MAP-Elites archive per island in Postgres: one elite per cell, replaced only by a strictly
 * better candidate. Ingestion turns a succeeded job into a candidate (fitness from its metrics,
 * descriptor from the behaviour descriptor), places it, records the outcome on the job, and every
 * so many ingestions refits the projection and migrates elites between islands.
 */
export class MapElitesArchive {
  readonly settings: ArchiveSettings;
  readonly descriptor: BehaviorDescriptor;
  private readonly pool: Pool;
  private readonly experimentId: string;
  private readonly seed: number;
  private readonly logger: Logger | undefined;
  private readonly ensureCommit: (commit: string) => Promise<void>;
  /** Cells of behaviour space: the grid, or the CVT's centroids (refitted with the projection). */
  tessellation: Tessellation;
  /** The elites in memory, for the schedule stage (see elites.ts). */
  readonly elites: EliteMirror;
  private pending: PendingRefit | undefined;
  /** The last refit applied off the tick (the bench reads its timings). */
  lastRefit: RefitSummary | undefined;
  /** The ingestion count whose refit failed off the tick: not started again at that count. */
  private failedAt: number | undefined;

  constructor(options: ArchiveOptions) {
    this.pool = options.pool;
    this.experimentId = options.experimentId;
    this.settings = options.settings;
    this.descriptor = options.descriptor;
    this.seed = options.seed;
    this.logger = options.logger;
    this.ensureCommit = options.ensureCommit ?? (async () => undefined);
    this.elites = new EliteMirror(this.experimentId);
    this.tessellation = this.settings.archiveType === 'cvt'
      ? new CvtTessellation(fitCentroids(this.settings.cells, this.descriptor.dimensions, this.cvtSeed, this.pointModel()))
      : new GridTessellation(this.settings.cellsPerDim, this.descriptor.dimensions);
  }

  /** The CVT's seed: from the experiment, so every scheduler of it cuts the same cells. */
  private get cvtSeed(): number {
    return seedFromString(`${this.experimentId}:cvt`);
  }

  /**
   * Where descriptors fall before any data: whitened coordinates z ~ N(0, 1), clipped to ±clip
   * and mapped to (z + clip) / 2·clip, are normal around 0.5 with sd 1 / (2·clip); metrics
   * normalised by their ranges are taken as uniform.
   */
  private pointModel(): PointModel {
    return this.descriptor.kind === 'embedding' ? { normalSd: 1 / (2 * this.settings.clip) } : 'uniform';
  }

  /** Creates the archive state row and loads the stored projection (and the CVT centroids fitted with it). */
  async open(): Promise<void> {
    await withTransaction(this.pool, (client) => lockArchiveState(client, this.experimentId, this.seed));
    if (this.descriptor instanceof EmbeddingDescriptor) {
      const state = await getArchiveState(this.pool, this.experimentId);
      const stored = isWhitenedPca(state?.projection) ? (state.projection as StoredProjection) : undefined;
      this.descriptor.projection = stored;
      if (this.settings.archiveType === 'cvt' && stored?.centroids && stored.centroids.length === this.settings.cells) {
        this.tessellation = new CvtTessellation(stored.centroids);
      }
    }
  }

  isBetter(fitness: number, than: number): boolean {
    return this.settings.fitnessHigherIsBetter ? fitness > than : fitness < than;
  }

  private improvement(fitness: number, incumbent: number): number {
    return this.settings.fitnessHigherIsBetter ? fitness - incumbent : incumbent - fitness;
  }

  /** The cell a descriptor falls in: the grid's, or the CVT's nearest centroid. */
  private cellFor(descriptor: readonly number[]): number[] {
    return this.tessellation.cellOf(descriptor);
  }

  /**
   * Places a candidate in one island's grid inside the caller's transaction; an elite it placed
   * is appended to `placedOut` (for the in-memory elites once the transaction commits).
   */
  async place(db: Queryable, island: number, candidate: Candidate, placedOut?: Elite[]): Promise<Placement> {
    const cell = this.cellFor(candidate.descriptor);
    const key = cellKey(cell);
    const incumbent = await lockElite(db, this.experimentId, island, key);
    const base = { island, cell, descriptor: candidate.descriptor };
    if (incumbent && incumbent.commitHash === candidate.commit) {
      return { ...base, placed: false, delta: 0, incumbent: { commit: incumbent.commitHash, fitness: incumbent.fitness } };
    }
    if (incumbent && !this.isBetter(candidate.fitness, incumbent.fitness)) {
      return { ...base, placed: false, delta: this.improvement(candidate.fitness, incumbent.fitness), incumbent: { commit: incumbent.commitHash, fitness: incumbent.fitness } };
    }
    const elite: Elite = {
      experimentId: this.experimentId, island, cellKey: key, cell, descriptor: candidate.descriptor,
      commitHash: candidate.commit, jobId: candidate.jobId, fitness: candidate.fitness, source: candidate.source,
    };
    await upsertElite(db, elite);
    placedOut?.push(elite);
    return {
      ...base,
      placed: true,
      delta: incumbent ? this.improvement(candidate.fitness, incumbent.fitness) : null,
      incumbent: incumbent ? { commit: incumbent.commitHash, fitness: incumbent.fitness } : null,
    };
  }

  /** Fitness from the job's metrics: the configured metric, or the floor when it is missing. */
  fitnessOf(metrics: ReadonlyMap<string, number>): { fitness: number; note?: string } {
    const value = metrics.get(this.settings.fitnessMetric);
    if (value === undefined || !Number.isFinite(value)) {
      return { fitness: this.settings.fitnessFloor, note: `metric ${this.settings.fitnessMetric} missing, fitness floor ${this.settings.fitnessFloor} used` };
    }
    return { fitness: value };
  }

  /**
   * Reads the jobs' commits ahead of ingestion, at most `concurrency` at once (p-limit): each
   * commit's repository-state vector is computed and cached, so the ingestions that follow, one
   * at a time in their transactions, find it ready. Commits are first made present in order (the
   * first missing one fetches them all). A commit that cannot be read here is left for its
   * ingestion to report.
   */
  async prepare(jobs: readonly EvolutionJob[], concurrency: number): Promise<void> {
    if (!(this.descriptor instanceof EmbeddingDescriptor) || jobs.length < 2) return;
    const state = this.descriptor.state;
    const pairs: Array<{ commit: string; parent: string | null }> = [];
    for (const job of jobs) {
      const commit = job.resultCommit ?? job.baseCommit;
      const parent = job.kind === 'baseline' || job.baseCommit === commit ? null : job.baseCommit;
      try {
        await this.ensureCommit(commit);
        if (parent) await this.ensureCommit(parent);
        pairs.push({ commit, parent });
      } catch {
        // Reported by ingest().
      }
    }
    const limit = pLimit(Math.max(1, concurrency));
    await Promise.all(pairs.map(({ commit, parent }) => limit(() => state.embedding(commit, parent).catch(() => undefined))));
  }

  /**
   * Ingests a succeeded job. The baseline goes into every island, so each starts from the root;
   * an evolution job into its own island. Throws when the candidate cannot be described (the
   * caller records that as a failed ingestion). A refit falling due here is handled as `refit`
   * says (see RefitMode); a refit still pending from an earlier ingestion is applied first, so
   * every refit lands between the ingestion it was due at and the next.
   */
  async ingest(job: EvolutionJob, options: IngestOptions = {}): Promise<IngestionOutcome> {
    if (this.pending) await this.applyPendingRefit({ wait: true });
    const commit = job.resultCommit ?? job.baseCommit;
    const metricRows = await getMetrics(this.pool, this.experimentId, commit);
    const metrics = new Map(metricRows.map((row) => [row.name, row.value]));
    const { fitness, note } = this.fitnessOf(metrics);
    if (this.descriptor.kind === 'embedding') {
      await this.ensureCommit(commit);
      if (job.kind !== 'baseline' && job.baseCommit !== commit) await this.ensureCommit(job.baseCommit);
    }
    const description = await this.descriptor.describe({ commit, parent: job.kind === 'baseline' ? null : job.baseCommit, metrics });
    const baseline = job.kind === 'baseline';
    const islands = baseline ? Array.from({ length: this.settings.islands }, (_, i) => i) : [job.island % this.settings.islands];
    const candidate: Candidate = { commit, jobId: job.id, fitness, descriptor: description.descriptor, source: baseline ? 'baseline' : 'ingestion' };

    const placedElites: Elite[] = [];
    const { placements, ingestions, before, after } = await withTransaction(this.pool, async (client) => {
      // The version row first (every writer of the elites takes it before the state row): which
      // elites this transaction builds on.
      const version = await lockArchiveVersion(client, this.experimentId);
      await lockArchiveState(client, this.experimentId, this.seed);
      const placements: Placement[] = [];
      for (const island of islands) placements.push(await this.place(client, island, candidate, placedElites));
      const ingestions = await countIngestion(client, this.experimentId);
      const placed = placements.some((placement) => placement.placed);
      const reason = describeOutcome(this.settings.fitnessMetric, fitness, placements, [note, ...description.notes]);
      const main = placements.find((placement) => placement.placed) ?? placements[0];
      await recordIngestion(client, job.id, {
        status: placed ? 'ingested' : 'rejected',
        delta: main.delta,
        cell: { island: main.island, cell: main.cell, descriptor: main.descriptor, islands: placements.map((p) => ({ island: p.island, placed: p.placed })) },
        reason,
        sequence: ingestions,
      });
      const after = placedElites.length > 0 ? ((await readArchiveVersion(client, this.experimentId)) ?? version) : version;
      return { placements, ingestions, before: version, after };
    });
    this.elites.committed(before, after, { placed: placedElites });
    const placed = placements.some((placement) => placement.placed);
    const outcome: IngestionOutcome = {
      jobId: job.id, commit, fitness, status: placed ? 'ingested' : 'rejected', placements,
      reason: describeOutcome(this.settings.fitnessMetric, fitness, placements, [note, ...description.notes]),
    };
    const mode = options.refit ?? 'inline';
    const migrationDue = this.settings.islands >= 2 && ingestions % this.settings.migrationInterval === 0;
    let applied: RefitSummary | undefined;
    for (const model of options.apply ?? []) applied = await this.applyProjection(model);
    if (applied) {
      const migrated = migrationDue ? await this.migrate() : undefined;
      return { ...outcome, refit: applied, ...(migrated !== undefined ? { migrated } : {}) };
    }
    if (mode !== 'none' && (await this.refitDue(ingestions))) {
      if (mode === 'defer') {
        this.startRefit(ingestions, migrationDue);
        return outcome;
      }
      const refit = await this.refit(ingestions);
      const migrated = migrationDue ? await this.migrate() : undefined;
      return { ...outcome, refit, ...(migrated !== undefined ? { migrated } : {}) };
    }
    const migrated = migrationDue ? await this.migrate() : undefined;
    return { ...outcome, ...(migrated !== undefined ? { migrated } : {}) };
  }

  private async refitDue(ingestions: number): Promise<boolean> {
    if (!(this.descriptor instanceof EmbeddingDescriptor)) return false;
    const state = await getArchiveState(this.pool, this.experimentId);
    const fittedAt = state?.projectionFittedAt ?? null;
    if (fittedAt !== null && ingestions - fittedAt < this.settings.refitInterval) return false;
    const samples = await countCommitEmbeddings(this.pool, this.experimentId, this.descriptor.state.embedderId);
    return samples >= this.settings.minFitSamples;
  }

  /**
   * Starts off the tick a refit due at the stored ingestion count that was never applied (the
   * scheduler that ingested it stopped or died first), so it still lands before the next
   * ingestion. Returns whether one was started.
   */
  async resumeDueRefit(): Promise<boolean> {
    if (this.pending || !(this.descriptor instanceof EmbeddingDescriptor)) return false;
    const ingestions = (await getArchiveState(this.pool, this.experimentId))?.ingestions ?? 0;
    if (ingestions === 0 || ingestions === this.failedAt || !(await this.refitDue(ingestions))) return false;
    this.startRefit(ingestions);
    return true;
  }

  /** A refit is computing off the tick (or computed, not yet applied): ingestion waits for it. */
  get refitPending(): boolean {
    return this.pending !== undefined;
  }

  /**
   * Starts the refit due at ingestion `at` off the tick: the samples and the elites are read, the
   * PCA and k-means run and the elites are re-placed in a worker thread (fit-thread.ts), then
   * written in one transaction, while the scheduler keeps dispatching and scheduling (that
   * transaction holds the elites' version row, not the sampler's state row the schedule stage
   * takes). The scheduler ingests nothing until `applyPendingRefit` finds it done, so the refit
   * lands exactly between ingestion `at` and the next, as an inline refit would.
   */
  startRefit(at: number, migrate = false): void {
    if (this.pending) throw new Error(`a refit (due at ingestion ${this.pending.at}) is already pending`);
    const started = performance.now();
    const pending: PendingRefit = {
      at,
      migrate,
      started,
      settled: false,
      result: this.prepareRefit(true)
        .then((prepared) => this.applyProjection(prepared.model, prepared, { ifChanged: 'fail' }))
        .then(
          (summary) => summary,
          (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
        ),
    };
    void pending.result.then(() => {
      pending.settled = true;
    });
    this.pending = pending;
    this.logger?.info({ ingestions: at }, 'behaviour projection refit started off the tick (ingestion waits until it is applied)');
  }

  /**
   * Ends the pending refit: once it is written, runs the migration that was due at its ingestion
   * and returns true; returns false, without waiting, while it is still computing, unless `wait`.
   * A refit that failed is logged and dropped: it falls due again at the next ingestion.
   */
  async applyPendingRefit(options: { readonly wait?: boolean } = {}): Promise<boolean> {
    const pending = this.pending;
    if (!pending) return true;
    if (!pending.settled && !options.wait) return false;
    const result = await pending.result;
    this.pending = undefined;
    if (!(result instanceof Error)) this.lastRefit = result;
    if (result instanceof Error) {
      this.failedAt = pending.at;
      this.logger?.warn({ err: result, ingestions: pending.at }, `behaviour projection refit failed (tried again at the next ingestion): ${errorMessage(result)}`);
    } else {
      this.logger?.info({ ...result, ingestions: pending.at, ms: Math.round(performance.now() - pending.started) }, 'behaviour projection refitted off the tick, elites re-projected');
    }
    if (pending.migrate) await this.migrate();
    return true;
  }

  /**
   * Fits the whitened PCA on the most recent commit vectors (and the CVT's centroids on their new
   * coordinates), then re-projects every stored elite under it and places them again; when two
   * elites land in one cell the better one stays. Inline: the fit runs on this thread.
   */
  async refit(ingestions?: number): Promise<RefitSummary> {
    const prepared = await this.prepareRefit(false);
    const summary = await this.applyProjection(prepared.model, prepared);
    this.logger?.info({ ...summary, ingestions: ingestions ?? null }, 'behaviour projection refitted, elites re-projected');
    return summary;
  }

  private embeddingDescriptor(): EmbeddingDescriptor {
    if (!(this.descriptor instanceof EmbeddingDescriptor)) throw new Error('only the embedding descriptor has a projection to refit');
    return this.descriptor;
  }

  /**
   * Reads the samples, fits the model and projects a snapshot of the elites under it: in a worker
   * thread with its own connection when `offTick` (fit-thread.ts), else on this thread. Then
   * places the elites by their new coordinates.
   */
  private async prepareRefit(offTick: boolean): Promise<PreparedRefit> {
    const descriptor = this.embeddingDescriptor();
    // The snapshot: the elites at the version stored now. Written as computed only if that version
    // is still the stored one under the version row's lock (applyProjection).
    const version = (await readArchiveVersion(this.pool, this.experimentId)) ?? '';
    const elites = [...(await this.elites.byIsland(this.pool, version || undefined)).values()].flat();
    const job: RefitJob = {
      experimentId: this.experimentId,
      embedderId: descriptor.state.embedderId,
      sampleLimit: FIT_SAMPLE_LIMIT,
      elites,
      higherIsBetter: this.settings.fitnessHigherIsBetter,
      cellsPerDim: this.settings.cellsPerDim,
      dimensions: descriptor.dimensions,
      clip: this.settings.clip,
      ...(this.settings.archiveType === 'cvt' ? { cvt: { cells: this.settings.cells, seed: this.cvtSeed, model: this.pointModel() } } : {}),
    };
    const computed = offTick ? await refitInThread(this.pool, job) : await computeRefit(this.pool, job);
    return { model: computed.model, samples: computed.samples, ms: computed.ms, version, placement: computed.placement };
  }

  /**
   * Re-places every elite under `model` in one transaction holding the elites' version row: the
   * elites are rewritten and the model stored as the projection (with the CVT's centroids), fitted
   * at the ingestion count stored now. `prepared` is a re-placement computed beforehand from the
   * elites at a version; it is used only if that version is still the stored one, otherwise the
   * elites are read and re-placed here, or with `ifChanged: 'fail'` nothing is written and the
   * refit fails (a refit computed off the tick never lands on an archive someone else changed
   * meanwhile: a scheduler that lost its lock to another). Also how a replay applies a recorded
   * model.
   */
  async applyProjection(
    model: StoredProjection,
    prepared?: Pick<PreparedRefit, 'version' | 'placement' | 'samples' | 'ms'>,
    options: { readonly ifChanged?: 'replace' | 'fail' } = {},
  ): Promise<RefitSummary> {
    const descriptor = this.embeddingDescriptor();
    const writing = performance.now();
    const { placement, before, after } = await withTransaction(this.pool, async (client) => {
      const version = await lockArchiveVersion(client, this.experimentId);
      if (prepared && prepared.version !== version && options.ifChanged === 'fail') {
        throw new Error('the elites changed while the refit was computed (another writer): not applied');
      }
      const placement = prepared && prepared.version === version
        ? prepared.placement
        : await this.replaceFromDatabase(client, await listElites(client, this.experimentId), model);
      await deleteElites(client, this.experimentId);
      await insertElites(client, this.experimentId, placement.placed);
      // The state row last and briefly: the schedule stage locks it every tick.
      await saveProjection(client, this.experimentId, model);
      const after = (await readArchiveVersion(client, this.experimentId)) ?? version;
      return { placement, before: version, after };
    });
    if (this.settings.archiveType === 'cvt' && model.centroids) this.tessellation = new CvtTessellation(model.centroids);
    descriptor.projection = model;
    this.elites.committed(before, after, { all: placement.placed.map((elite) => ({ ...elite, experimentId: this.experimentId })) });
    const write = Math.round(performance.now() - writing);
    return {
      samples: prepared?.samples ?? model.samples, elites: placement.elites, moved: placement.moved, dropped: placement.dropped,
      ...(prepared ? { ms: { ...prepared.ms, write } } : {}),
    };
  }

  /** `replace` with the elites' coordinates under `model` computed here, from their stored vectors. */
  private async replaceFromDatabase(db: Queryable, elites: readonly Elite[], model: StoredProjection): Promise<Replacement> {
    const descriptor = this.embeddingDescriptor();
    const embeddings = await getCommitEmbeddings(db, this.experimentId, descriptor.state.embedderId, [...new Set(elites.map((e) => e.commitHash))]);
    const projected = new Map<string, number[]>();
    for (const [commit, embedding] of embeddings) projected.set(commit, descriptor.project(meanVector(embedding, embedding.vectorSum.length), model));
    return this.replace(elites, model, projected);
  }

  /** `replaceElites` under `model`: a CVT's cells are the model's centroids, a grid's stay. */
  private replace(elites: readonly Elite[], model: StoredProjection, projected: ReadonlyMap<string, number[]>): Replacement {
    const tessellation = this.settings.archiveType === 'cvt' && model.centroids ? new CvtTessellation(model.centroids) : this.tessellation;
    return replaceElites(elites, projected, tessellation, this.settings.fitnessHigherIsBetter);
  }

  /** Each island sends its best elites to the next island of the ring; they stay only where better. */
  async migrate(): Promise<number> {
    const islands = this.settings.islands;
    const placedElites: Elite[] = [];
    const { migrated, before, after } = await withTransaction(this.pool, async (client) => {
      const version = await lockArchiveVersion(client, this.experimentId);
      const emigrants: Elite[][] = [];
      for (let island = 0; island < islands; island++) {
        emigrants.push(await topElites(client, this.experimentId, island, this.settings.migrationSize, this.settings.fitnessHigherIsBetter));
      }
      let placed = 0;
      for (let island = 0; island < islands; island++) {
        const target = (island + 1) % islands;
        for (const elite of emigrants[island]) {
          const placement = await this.place(client, target, { commit: elite.commitHash, jobId: elite.jobId, fitness: elite.fitness, descriptor: elite.descriptor, source: 'migration' }, placedElites);
          if (placement.placed) placed += 1;
        }
      }
      const after = placedElites.length > 0 ? ((await readArchiveVersion(client, this.experimentId)) ?? version) : version;
      return { migrated: placed, before: version, after };
    });
    this.elites.committed(before, after, { placed: placedElites });
    this.logger?.info({ migrated, islands }, 'elites migrated around the island ring');
    return migrated;
  }

  async best(): Promise<Elite | undefined> {
    return bestElite(this.pool, this.experimentId, this.settings.fitnessHigherIsBetter);
  }

  async coverage(): Promise<{ elites: number; byIsland: Record<string, number>; cellsPerIsland: number; coverage: number }> {
    const byIsland = await countElitesByIsland(this.pool, this.experimentId);
    const cellsPerIsland = this.tessellation.cellCount;
    const elites = [...byIsland.values()].reduce((sum, count) => sum + count, 0);
    return {
      elites,
      byIsland: Object.fromEntries([...byIsland].map(([island, count]) => [String(island), count])),
      cellsPerIsland,
      coverage: elites / (cellsPerIsland * this.settings.islands),
    };
  }
}

function describeOutcome(metric: string, fitness: number, placements: readonly Placement[], notes: ReadonlyArray<string | undefined>): string {
  const parts = placements.map((p) => {
    const where = `island ${p.island} cell [${p.cell.join(',')}]`;
    if (p.placed && !p.incumbent) return `${where}: new cell`;
    if (p.placed) return `${where}: replaced ${p.incumbent!.commit.slice(0, 12)} (${metric} ${p.incumbent!.fitness} -> ${fitness})`;
    return `${where}: not better than elite ${p.incumbent!.commit.slice(0, 12)} (${metric} ${p.incumbent!.fitness} vs ${fitness})`;
  });
  const extra = notes.filter((note): note is string => Boolean(note));
  return [...parts, ...extra].join('; ');
}
