import { fitCentroids, type PointModel } from './cvt.ts';
import { fitWhitenedPca, projectPca, toUnitInterval, type WhitenedPca } from './projection.ts';

/** The stored projection (`archive_state.projection`), with the CVT centroids refitted alongside it. */
export type StoredProjection = WhitenedPca & { readonly centroids?: number[][] };

/** What a refit fits on: the sample vectors row-major in one Float64Array, and the model's shape. */
export interface FitInput {
  readonly samples: Float64Array;
  /** Length of each sample vector. */
  readonly width: number;
  /** The grid's dimensions (the PCA's components). */
  readonly dimensions: number;
  readonly clip: number;
  /** For a CVT archive: its centroids are refitted on the samples' new coordinates. */
  readonly cvt?: { readonly cells: number; readonly seed: number; readonly model: PointModel };
}

/**
 * The PCA (and for a CVT the k-means over the projected samples): a pure function of its input,
 * so the same model comes out inline or in the refit's worker thread (refit-compute.ts).
 */
export function fitProjection(input: FitInput): StoredProjection {
  const { samples, width, dimensions } = input;
  const vectors: number[][] = [];
  for (let offset = 0; offset + width <= samples.length; offset += width) vectors.push(Array.from(samples.subarray(offset, offset + width)));
  const pca = fitWhitenedPca(vectors, dimensions);
  if (!input.cvt) return pca;
  const projected = vectors.map((vector) => toUnitInterval(projectPca(pca, vector, dimensions), input.clip));
  return { ...pca, centroids: fitCentroids(input.cvt.cells, dimensions, input.cvt.seed, input.cvt.model, projected) };
}
