import { getCommitEmbeddings, recentCommitEmbeddings } from '../../shared/db/archive.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import { meanVector } from '../embedding/repository-state.ts';
import type { PointModel } from './cvt.ts';
import { fitProjection, type StoredProjection } from './fit.ts';
import { projectPca, toUnitInterval } from './projection.ts';
import { replaceElites, tessellationOf, type Replacement, type StoredElite } from './replacement.ts';

/**
 * The heavy half of a refit as one job on plain data, so it can run in a worker thread with its
 * own database connection (fit-thread.ts) or inline: read the most recent commit vectors, fit the
 * model on them, read the other elites' vectors, project every elite's commit under the model and
 * place the elites by those coordinates. What stays with the archive is writing them.
 */
export interface RefitJob {
  readonly experimentId: string;
  readonly embedderId: string;
  /** How many of the most recent commit vectors the model is fitted on. */
  readonly sampleLimit: number;
  /** The elites to re-place: a snapshot at the version the archive read. */
  readonly elites: readonly StoredElite[];
  readonly higherIsBetter: boolean;
  /** The grid's cells per dimension; a CVT archive (`cvt`) places by the model's own centroids. */
  readonly cellsPerDim: number;
  readonly dimensions: number;
  readonly clip: number;
  readonly cvt?: { readonly cells: number; readonly seed: number; readonly model: PointModel };
}

export interface RefitComputed {
  readonly model: StoredProjection;
  readonly samples: number;
  readonly placement: Replacement;
  /** `place`: projecting the elites' commits and placing the elites. */
  readonly ms: { readonly samples: number; readonly fit: number; readonly place: number };
}

/** Commits' vectors are read this many at a time: bounded memory and query size. */
const SLICE = 1000;

export async function computeRefit(db: Queryable, job: RefitJob): Promise<RefitComputed> {
  const started = performance.now();
  const recent = await recentCommitEmbeddings(db, job.experimentId, job.embedderId, job.sampleLimit);
  if (recent.length < 2) throw new Error('a PCA needs at least two samples');
  const width = recent[0].vectorSum.length;
  const samples = new Float64Array(recent.length * width);
  // Kept by commit: most elites are recent commits, whose vectors need not be read twice.
  const known = new Map<string, number[]>();
  recent.forEach((embedding, i) => {
    const mean = meanVector(embedding, width);
    known.set(embedding.commitHash, mean);
    samples.set(mean, i * width);
  });
  const read = performance.now();
  const model = fitProjection({ samples, width, dimensions: job.dimensions, clip: job.clip, ...(job.cvt ? { cvt: job.cvt } : {}) });
  const fitted = performance.now();
  const project = (vector: readonly number[]) => toUnitInterval(projectPca(model, vector, job.dimensions), job.clip);
  const projected = new Map<string, number[]>();
  const missing: string[] = [];
  for (const commit of new Set(job.elites.map((elite) => elite.commitHash))) {
    const mean = known.get(commit);
    if (mean) projected.set(commit, project(mean));
    else missing.push(commit);
  }
  for (let start = 0; start < missing.length; start += SLICE) {
    const embeddings = await getCommitEmbeddings(db, job.experimentId, job.embedderId, missing.slice(start, start + SLICE));
    for (const [commit, embedding] of embeddings) projected.set(commit, project(meanVector(embedding, embedding.vectorSum.length)));
  }
  const cells = job.cvt && model.centroids ? { kind: 'cvt' as const, centroids: model.centroids } : { kind: 'grid' as const, cellsPerDim: job.cellsPerDim, dimensions: job.dimensions };
  const placement = replaceElites(job.elites, projected, tessellationOf(cells), job.higherIsBetter);
  const ms = { samples: Math.round(read - started), fit: Math.round(fitted - read), place: Math.round(performance.now() - fitted) };
  return { model, samples: recent.length, placement, ms };
}
