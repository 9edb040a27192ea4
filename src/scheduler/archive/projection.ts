import { PCA } from 'ml-pca';
import { SeededRandom, seedFromString } from '../random.ts';

/**
 * From a repository-state vector (L2-normalised, hundreds of dimensions) to the grid's few
 * coordinates in [0, 1].
 *
 * Once enough commits are known, a PCA with whitening: centre, project on the top components and
 * divide each by its standard deviation, so every grid axis spreads the population alike. Before
 * that (fewer than MIN_FIT_SAMPLES vectors), a fixed Gaussian random projection seeded by a
 * constant: deterministic across runs and restarts, and for a unit vector each coordinate is
 * roughly standard normal, so the same clip-and-map step applies. Either way a coordinate z is
 * clipped to [-k, k] and mapped to (z + k) / 2k.
 */

export interface WhitenedPca {
  readonly kind: 'pca';
  readonly means: number[];
  /** One row per component, each as long as the input vectors. */
  readonly components: number[][];
  readonly stdevs: number[];
  readonly samples: number;
}

const FALLBACK_SEED = seedFromString('loreley.fallback-projection.v1');
const fallbackCache = new Map<string, number[][]>();

export function fitWhitenedPca(vectors: readonly number[][], targetDims: number): WhitenedPca {
  if (vectors.length < 2) throw new Error('a PCA needs at least two samples');
  const n = vectors.length;
  const d = vectors[0].length;
  const means = new Array<number>(d).fill(0);
  for (const vector of vectors) vector.forEach((value, i) => (means[i] += value / n));
  // The d×d covariance accumulated over flat typed arrays, then its symmetric eigendecomposition
  // (ml-pca's covariance path): the same components and deviations as the SVD of the n×d
  // samples, 3–4× faster at 4,096 × 256 (`npm run bench -- --only archive`).
  const covariance = new Float64Array(d * d);
  const centred = new Float64Array(d);
  for (const vector of vectors) {
    for (let i = 0; i < d; i++) centred[i] = (vector[i] ?? 0) - means[i];
    for (let i = 0; i < d; i++) {
      const value = centred[i];
      if (value === 0) continue;
      const row = i * d;
      for (let j = i; j < d; j++) covariance[row + j] += value * centred[j];
    }
  }
  const matrix: number[][] = Array.from({ length: d }, () => new Array<number>(d));
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      const value = covariance[i * d + j] / (n - 1);
      matrix[i][j] = value;
      matrix[j][i] = value;
    }
  }
  const pca = new PCA(matrix, { isCovarianceMatrix: true });
  const eigenvectors = pca.getEigenvectors();
  // Rounding can leave the smallest eigenvalues a hair below zero; no variance is no deviation.
  const stdevs = pca.getStandardDeviations().map((value) => (Number.isFinite(value) ? value : 0));
  const count = Math.min(targetDims, eigenvectors.columns, n);
  const components: number[][] = [];
  for (let j = 0; j < count; j++) components.push(eigenvectors.getColumn(j));
  return { kind: 'pca', means, components, stdevs: stdevs.slice(0, count), samples: n };
}

/** Whitened coordinates; components the fit could not find (too few samples, no variance) are 0. */
export function projectPca(model: WhitenedPca, vector: readonly number[], targetDims: number): number[] {
  const out = new Array<number>(targetDims).fill(0);
  model.components.forEach((component, j) => {
    const stdev = model.stdevs[j];
    if (!(stdev > 1e-12)) return;
    let dot = 0;
    for (let i = 0; i < component.length; i++) dot += component[i] * ((vector[i] ?? 0) - model.means[i]);
    out[j] = dot / stdev;
  });
  return out;
}

export function fallbackProject(vector: readonly number[], targetDims: number): number[] {
  const key = `${vector.length}x${targetDims}`;
  let matrix = fallbackCache.get(key);
  if (!matrix) {
    const random = new SeededRandom(FALLBACK_SEED);
    matrix = Array.from({ length: targetDims }, () => Array.from({ length: vector.length }, () => random.normal()));
    fallbackCache.set(key, matrix);
  }
  return matrix.map((row) => row.reduce((sum, weight, i) => sum + weight * vector[i], 0));
}

export function toUnitInterval(coordinates: readonly number[], clip: number): number[] {
  return coordinates.map((z) => (Math.min(Math.max(Number.isFinite(z) ? z : 0, -clip), clip) + clip) / (2 * clip));
}

export function isWhitenedPca(value: unknown): value is WhitenedPca {
  return typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'pca';
}
