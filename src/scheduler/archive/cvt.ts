import { SeededRandom } from '../random.ts';
import { cellOf as gridCellOf, chebyshev } from './grid.ts';

/**
 * How behaviour space is cut into cells: the MAP-Elites grid (`MAPELITES_ARCHIVE_CELLS_PER_DIM`
 * per dimension, as the original) or a centroidal Voronoi tessellation (CVT-MAP-Elites, Vassiliades
 * et al. 2018: `MAPELITES_CELLS` cells whatever the dimensions, each the region nearest one
 * centroid). A grid of 32 cells on 4 dimensions has a million cells and a run of a hundred jobs
 * fills a few dozen, so nearly every child lands in an empty cell and the archive selects little;
 * a CVT sized to the run makes children compete with their neighbours.
 *
 * The centroids are Lloyd's k-means over sample points, seeded from the experiment id so every
 * scheduler of an experiment computes the same ones. Before any data, the sample points follow
 * what the descriptor produces: for the embedding descriptor whitened coordinates, roughly normal
 * around the middle of [0, 1] (see projection.ts), for metrics uniform. Each time the PCA is
 * refitted the centroids are refitted too, on the commits' own projected descriptors (padded with
 * model points), so the cells follow where the population actually is.
 */

export interface Tessellation {
  readonly kind: 'grid' | 'cvt';
  /** Cells per island. */
  readonly cellCount: number;
  cellOf(descriptor: readonly number[]): number[];
  /** How many "rings" apart two cells are, for picking inspirations near a parent. */
  ringDistance(a: readonly number[], b: readonly number[]): number;
}

export class GridTessellation implements Tessellation {
  readonly kind = 'grid';
  readonly cellCount: number;
  private readonly cellsPerDim: number;

  constructor(cellsPerDim: number, dimensions: number) {
    this.cellsPerDim = cellsPerDim;
    this.cellCount = cellsPerDim ** dimensions;
  }

  cellOf(descriptor: readonly number[]): number[] {
    return gridCellOf(descriptor, this.cellsPerDim);
  }

  ringDistance(a: readonly number[], b: readonly number[]): number {
    return chebyshev(a, b);
  }
}

export class CvtTessellation implements Tessellation {
  readonly kind = 'cvt';
  readonly cellCount: number;
  readonly centroids: readonly number[][];
  /** Mean distance from a centroid to its nearest other centroid: one "ring". */
  private readonly spacing: number;

  constructor(centroids: readonly number[][]) {
    this.centroids = centroids;
    this.cellCount = centroids.length;
    let total = 0;
    for (let i = 0; i < centroids.length; i++) {
      let nearest = Infinity;
      for (let j = 0; j < centroids.length; j++) if (j !== i) nearest = Math.min(nearest, squared(centroids[i], centroids[j]));
      total += Number.isFinite(nearest) ? Math.sqrt(nearest) : 1;
    }
    this.spacing = centroids.length > 0 ? total / centroids.length || 1 : 1;
  }

  cellOf(descriptor: readonly number[]): number[] {
    return [nearest(this.centroids, descriptor)];
  }

  ringDistance(a: readonly number[], b: readonly number[]): number {
    const ca = this.centroids[a[0]];
    const cb = this.centroids[b[0]];
    if (!ca || !cb) return Infinity;
    if (a[0] === b[0]) return 0;
    return Math.max(1, Math.round(Math.sqrt(squared(ca, cb)) / this.spacing));
  }
}

function squared(a: readonly number[], b: readonly number[]): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - (b[i] ?? 0);
    sum += d * d;
  }
  return sum;
}

function nearest(centroids: readonly number[][], point: readonly number[]): number {
  let best = 0;
  let bestDistance = Infinity;
  for (let i = 0; i < centroids.length; i++) {
    const d = squared(centroids[i], point);
    if (d < bestDistance) {
      best = i;
      bestDistance = d;
    }
  }
  return best;
}

/** Where descriptors fall before the population says otherwise. */
export type PointModel = 'uniform' | { readonly normalSd: number };

/** A point of [0, 1]^dimensions from the model. */
function modelPoint(model: PointModel, dimensions: number, random: SeededRandom): number[] {
  return Array.from({ length: dimensions }, () => {
    if (model === 'uniform') return random.next();
    return Math.min(1, Math.max(0, 0.5 + model.normalSd * random.normal()));
  });
}

/** Points per centroid that k-means is run on: enough for stable cells, cheap enough at start. */
const POINTS_PER_CELL = 40;
const ITERATIONS = 25;

/**
 * `cells` centroids in [0, 1]^dimensions: Lloyd's k-means, seeded, over `data` (the population's
 * descriptors, when known) padded with points from `model` up to POINTS_PER_CELL per cell.
 */
export function fitCentroids(cells: number, dimensions: number, seed: number, model: PointModel, data: readonly number[][] = []): number[][] {
  const random = new SeededRandom(seed);
  const points: number[][] = data.map((point) => [...point]);
  while (points.length < cells * POINTS_PER_CELL) points.push(modelPoint(model, dimensions, random));
  // k-means++-free start: distinct random points, which the iterations spread out.
  const centroids = random.shuffle(points).slice(0, cells).map((point) => [...point]);
  const assignment = new Int32Array(points.length);
  for (let iteration = 0; iteration < ITERATIONS; iteration++) {
    for (let p = 0; p < points.length; p++) assignment[p] = nearest(centroids, points[p]);
    const sums = centroids.map(() => new Array<number>(dimensions).fill(0));
    const counts = new Array<number>(cells).fill(0);
    for (let p = 0; p < points.length; p++) {
      const c = assignment[p];
      counts[c] += 1;
      for (let d = 0; d < dimensions; d++) sums[c][d] += points[p][d];
    }
    for (let c = 0; c < cells; c++) {
      // An empty cell takes a fresh point, so no centroid is wasted.
      centroids[c] = counts[c] > 0 ? sums[c].map((sum) => sum / counts[c]) : [...points[random.int(points.length)]];
    }
  }
  return centroids;
}
