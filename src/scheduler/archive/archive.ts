import {
  bestElite, countCommitEmbeddings, countElitesByIsland, countIngestion, deleteElites, getArchiveState,
  getCommitEmbeddings, insertElites, listElites, lockArchiveState, lockElite, recentCommitEmbeddings, saveProjection, topElites, upsertElite,
  type Elite,
} from '../../shared/db/archive.ts';
import { recordIngestion, type EvolutionJob } from '../../shared/db/jobs.ts';
import { withTransaction, type Pool, type Queryable } from '../../shared/db/pool.ts';
import { getMetrics } from '../../shared/db/results.ts';
import type { Logger } from '../../shared/logger.ts';
import pLimit from 'p-limit';
import type { ArchiveSettings } from '../../shared/settings/archive.ts';
import { meanVector } from '../embedding/repository-state.ts';
import type { BehaviorDescriptor } from './descriptor.ts';
import { EmbeddingDescriptor } from './descriptor.ts';
import { seedFromString } from '../random.ts';
import { CvtTessellation, fitCentroids, GridTessellation, type PointModel, type Tessellation } from './cvt.ts';
import { cellKey } from './grid.ts';
import { fitWhitenedPca, isWhitenedPca, type WhitenedPca } from './projection.ts';

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

/** The stored projection, with the CVT centroids refitted alongside it. */
type StoredProjection = WhitenedPca & { readonly centroids?: number[][] };

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

  constructor(options: ArchiveOptions) {
    this.pool = options.pool;
    this.experimentId = options.experimentId;
    this.settings = options.settings;
    this.descriptor = options.descriptor;
    this.seed = options.seed;
    this.logger = options.logger;
    this.ensureCommit = options.ensureCommit ?? (async () => undefined);
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

  /** Places a candidate in one island's grid inside the caller's transaction. */
  async place(db: Queryable, island: number, candidate: Candidate): Promise<Placement> {
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
    await upsertElite(db, {
      experimentId: this.experimentId, island, cellKey: key, cell, descriptor: candidate.descriptor,
      commitHash: candidate.commit, jobId: candidate.jobId, fitness: candidate.fitness, source: candidate.source,
    });
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
   * caller records that as a failed ingestion).
   */
  async ingest(job: EvolutionJob): Promise<IngestionOutcome> {
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

    const { placements, ingestions } = await withTransaction(this.pool, async (client) => {
      const placements: Placement[] = [];
      for (const island of islands) placements.push(await this.place(client, island, candidate));
      await lockArchiveState(client, this.experimentId, this.seed);
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
      return { placements, ingestions };
    });
    const placed = placements.some((placement) => placement.placed);
    const outcome: IngestionOutcome = {
      jobId: job.id, commit, fitness, status: placed ? 'ingested' : 'rejected', placements,
      reason: describeOutcome(this.settings.fitnessMetric, fitness, placements, [note, ...description.notes]),
    };
    const refit = await this.maybeRefit(ingestions);
    const migrated = await this.maybeMigrate(ingestions);
    return { ...outcome, ...(refit ? { refit } : {}), ...(migrated !== undefined ? { migrated } : {}) };
  }

  private async maybeRefit(ingestions: number): Promise<RefitSummary | undefined> {
    if (!(this.descriptor instanceof EmbeddingDescriptor)) return undefined;
    const state = await getArchiveState(this.pool, this.experimentId);
    const fittedAt = state?.projectionFittedAt ?? null;
    if (fittedAt !== null && ingestions - fittedAt < this.settings.refitInterval) return undefined;
    const samples = await countCommitEmbeddings(this.pool, this.experimentId, this.descriptor.state.embedderId);
    if (samples < this.settings.minFitSamples) return undefined;
    return this.refit(ingestions);
  }

  /**
   * Fits the whitened PCA on the most recent commit vectors, then re-projects every stored elite
   * under it and places them again; when two elites land in one cell the better one stays.
   */
  async refit(ingestions?: number): Promise<RefitSummary> {
    if (!(this.descriptor instanceof EmbeddingDescriptor)) throw new Error('only the embedding descriptor has a projection to refit');
    const descriptor = this.descriptor;
    const embedderId = descriptor.state.embedderId;
    const dimensions = descriptor.dimensions;
    const embedDims = (await recentCommitEmbeddings(this.pool, this.experimentId, embedderId, 1))[0]?.vectorSum.length ?? 0;
    const samples = (await recentCommitEmbeddings(this.pool, this.experimentId, embedderId, FIT_SAMPLE_LIMIT)).map((e) => meanVector(e, embedDims));
    const pca = fitWhitenedPca(samples, dimensions);
    const count = ingestions ?? (await getArchiveState(this.pool, this.experimentId))?.ingestions ?? 0;
    // The CVT's cells follow the population: centroids refitted on the commits' new coordinates.
    const previous = this.tessellation;
    let model: StoredProjection = pca;
    if (this.settings.archiveType === 'cvt') {
      const centroids = fitCentroids(this.settings.cells, dimensions, this.cvtSeed, this.pointModel(), samples.map((vector) => descriptor.project(vector, pca)));
      model = { ...pca, centroids };
      this.tessellation = new CvtTessellation(centroids);
    }

    const summary = await withTransaction(this.pool, async (client) => {
      await lockArchiveState(client, this.experimentId, this.seed);
      const elites = await listElites(client, this.experimentId);
      const embeddings = await getCommitEmbeddings(client, this.experimentId, embedderId, [...new Set(elites.map((e) => e.commitHash))]);
      const ordered = [...elites].sort((a, b) => (this.isBetter(a.fitness, b.fitness) ? -1 : this.isBetter(b.fitness, a.fitness) ? 1 : 0));
      await deleteElites(client, this.experimentId);
      // Placed in memory by place()'s rules, best first, then written in one statement: a query
      // or two per elite held the archive lock for seconds at 10,000 elites.
      const placed = new Map<string, Omit<Elite, 'experimentId'>>();
      let moved = 0;
      let dropped = 0;
      for (const elite of ordered) {
        const embedding = embeddings.get(elite.commitHash);
        // An elite without a stored vector (it cannot happen for ingested commits) keeps its place.
        const next = embedding ? descriptor.project(meanVector(embedding, embedDims), model) : elite.descriptor;
        const cell = this.cellFor(next);
        const key = cellKey(cell);
        const slot = `${elite.island}:${key}`;
        const incumbent = placed.get(slot);
        if (incumbent && (incumbent.commitHash === elite.commitHash || !this.isBetter(elite.fitness, incumbent.fitness))) {
          dropped += 1;
          continue;
        }
        placed.set(slot, { island: elite.island, cellKey: key, cell, descriptor: next, commitHash: elite.commitHash, jobId: elite.jobId, fitness: elite.fitness, source: elite.source });
        if (key !== elite.cellKey) moved += 1;
      }
      await insertElites(client, this.experimentId, [...placed.values()]);
      await saveProjection(client, this.experimentId, model, count);
      return { samples: samples.length, elites: elites.length, moved, dropped };
    }).catch((error: unknown) => {
      this.tessellation = previous;
      throw error;
    });
    descriptor.projection = model;
    this.logger?.info({ ...summary, ingestions: count }, 'behaviour projection refitted, elites re-projected');
    return summary;
  }

  private async maybeMigrate(ingestions: number): Promise<number | undefined> {
    if (this.settings.islands < 2 || ingestions % this.settings.migrationInterval !== 0) return undefined;
    return this.migrate();
  }

  /** Each island sends its best elites to the next island of the ring; they stay only where better. */
  async migrate(): Promise<number> {
    const islands = this.settings.islands;
    const migrated = await withTransaction(this.pool, async (client) => {
      const emigrants: Elite[][] = [];
      for (let island = 0; island < islands; island++) {
        emigrants.push(await topElites(client, this.experimentId, island, this.settings.migrationSize, this.settings.fitnessHigherIsBetter));
      }
      let placed = 0;
      for (let island = 0; island < islands; island++) {
        const target = (island + 1) % islands;
        for (const elite of emigrants[island]) {
          const placement = await this.place(client, target, { commit: elite.commitHash, jobId: elite.jobId, fitness: elite.fitness, descriptor: elite.descriptor, source: 'migration' });
          if (placement.placed) placed += 1;
        }
      }
      return placed;
    });
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
