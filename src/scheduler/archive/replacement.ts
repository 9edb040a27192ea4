import type { Elite } from '../../shared/db/archive.ts';
import { CvtTessellation, GridTessellation, type Tessellation } from './cvt.ts';
import { cellKey } from './grid.ts';

/**
 * Re-placing the elites under a new behaviour model, as plain data in and out, so it runs in the
 * refit's worker thread as well as inline: at 10,000 elites the sort and the cell look-ups are
 * 15 ms of JavaScript that a tick would otherwise wait behind.
 */

export type StoredElite = Omit<Elite, 'experimentId'>;

/** The cells the elites are placed in: a grid, or the model's CVT centroids. */
export type CellSpec =
  | { readonly kind: 'grid'; readonly cellsPerDim: number; readonly dimensions: number }
  | { readonly kind: 'cvt'; readonly centroids: readonly number[][] };

export interface Replacement {
  readonly placed: StoredElite[];
  readonly elites: number;
  readonly moved: number;
  readonly dropped: number;
}

export function tessellationOf(cells: CellSpec): Tessellation {
  return cells.kind === 'cvt' ? new CvtTessellation(cells.centroids) : new GridTessellation(cells.cellsPerDim, cells.dimensions);
}

/**
 * Where `elites` go, given their commits' coordinates under the new model (`projected`; an elite
 * whose commit has none keeps its descriptor): best first (ties by commit, island, cell key, so the
 * result depends on the elites and the model alone), each into its island's cell; when two land
 * in one cell the better stays, as the archive's own placement rules.
 */
export function replaceElites(
  elites: readonly StoredElite[],
  projected: ReadonlyMap<string, number[]>,
  tessellation: Tessellation,
  higherIsBetter: boolean,
): Replacement {
  const isBetter = (fitness: number, than: number) => (higherIsBetter ? fitness > than : fitness < than);
  const ordered = [...elites].sort((a, b) => {
    if (isBetter(a.fitness, b.fitness)) return -1;
    if (isBetter(b.fitness, a.fitness)) return 1;
    return compare(a.commitHash, b.commitHash) || a.island - b.island || compare(a.cellKey, b.cellKey);
  });
  const placed = new Map<string, StoredElite>();
  let moved = 0;
  let dropped = 0;
  for (const elite of ordered) {
    const next = projected.get(elite.commitHash) ?? elite.descriptor;
    const cell = tessellation.cellOf(next);
    const key = cellKey(cell);
    const slot = `${elite.island}:${key}`;
    const incumbent = placed.get(slot);
    if (incumbent && (incumbent.commitHash === elite.commitHash || !isBetter(elite.fitness, incumbent.fitness))) {
      dropped += 1;
      continue;
    }
    placed.set(slot, { island: elite.island, cellKey: key, cell, descriptor: next, commitHash: elite.commitHash, jobId: elite.jobId, fitness: elite.fitness, source: elite.source });
    if (key !== elite.cellKey) moved += 1;
  }
  return { placed: [...placed.values()], elites: elites.length, moved, dropped };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
