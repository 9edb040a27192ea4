import { getCommitEmbeddings, recentCommitEmbeddings } from '../../shared/db/archive.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import { meanVector } from '../embedding/repository-state.ts';
import type { PointModel } from './cvt.ts';
import { fitProjection, type StoredProjection } from './fit.ts';
import { projectPca, toUnitInterval } from './projection.ts';

/**
 * The heavy half of a refit as one job on plain data, so it can run in a worker thread with its
 * own database connection (fit-thread.ts) or inline: read the most recent commit vectors, fit the
 * model on them, read the other elites' vectors and project every elite's commit under the model.
 * What stays with the archive is placing the elites by those coordinates and writing them.
 */
export interface RefitJob {
  readonly experimentId: string;
  readonly embedderId: string;
  /** How many of the most recent commit vectors the model is fitted on. */
  readonly sampleLimit: number;
  /** The commits of the elites to re-project. */
  readonly commits: readonly string[];
  readonly dimensions: number;
  readonly clip: number;
  readonly cvt?: { readonly cells: number; readonly seed: number; readonly model: PointModel };
}

export interface RefitComputed {
  readonly model: StoredProjection;
  readonly samples: number;
  /** Each commit's coordinates under the model; a commit without a stored vector is absent. */
  readonly projected: ReadonlyMap<string, number[]>;
  readonly ms: { readonly samples: number; readonly fit: number; readonly project: number };
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
  for (const commit of new Set(job.commits)) {
    const mean = known.get(commit);
    if (mean) projected.set(commit, project(mean));
    else missing.push(commit);
  }
  for (let start = 0; start < missing.length; start += SLICE) {
    const embeddings = await getCommitEmbeddings(db, job.experimentId, job.embedderId, missing.slice(start, start + SLICE));
    for (const [commit, embedding] of embeddings) projected.set(commit, project(meanVector(embedding, embedding.vectorSum.length)));
  }
  const ms = { samples: Math.round(read - started), fit: Math.round(fitted - read), project: Math.round(performance.now() - fitted) };
  return { model, samples: recent.length, projected, ms };
}
