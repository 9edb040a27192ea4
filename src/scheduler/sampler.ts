import type { Elite } from '../shared/db/archive.ts';
import { chebyshev } from './archive/grid.ts';
import type { SeededRandom } from './random.ts';

/**
 * Picks what the next job evolves from: a base elite drawn uniformly from its island, and up to
 * `count` inspirations from occupied cells around it, nearest rings first (Chebyshev radius 1,
 * growing to `maxRadius`), then random elites from anywhere on the island. Candidates within a
 * ring are shuffled, so ties between equally near cells are broken by the seeded generator only.
 */

export interface Sample {
  readonly base: Elite;
  readonly inspirations: Elite[];
  /** The largest radius inspirations were drawn from; maxRadius + 1 when random elites were added. */
  readonly radius: number;
}

/** How many rings apart two cells are: Chebyshev on the grid, centroid spacing on a CVT. */
export type RingDistance = (a: readonly number[], b: readonly number[]) => number;

export function selectInspirations(
  base: Elite, elites: readonly Elite[], count: number, maxRadius: number, random: SeededRandom, ring: RingDistance = chebyshev,
): { inspirations: Elite[]; radius: number } {
  const others = elites.filter((elite) => elite.cellKey !== base.cellKey && elite.commitHash !== base.commitHash);
  // Each elite's ring computed once, bucketed in island order: the same candidates in the same
  // order as filtering the island once per ring, so the seeded draws are unchanged.
  const distances = others.map((elite) => ring(elite.cell, base.cell));
  const rings = new Map<number, Elite[]>();
  others.forEach((elite, i) => {
    const r = distances[i];
    if (r < 1 || r > maxRadius) return;
    const list = rings.get(r);
    if (list) list.push(elite);
    else rings.set(r, [elite]);
  });
  const chosen: Elite[] = [];
  let radius = 0;
  for (let r = 1; r <= maxRadius && chosen.length < count; r++) {
    const around = rings.get(r) ?? [];
    if (around.length === 0) continue;
    for (const elite of random.shuffle(around)) {
      if (chosen.length >= count) break;
      chosen.push(elite);
      radius = r;
    }
  }
  if (chosen.length < count) {
    const picked = new Set(chosen);
    const rest = random.shuffle(others.filter((elite, i) => !picked.has(elite) && distances[i] > maxRadius));
    for (const elite of rest) {
      if (chosen.length >= count) break;
      // The same commit can be an elite in several cells' histories only once per island, but a
      // migrated commit may repeat; one copy is enough.
      if (chosen.some((c) => c.commitHash === elite.commitHash)) continue;
      chosen.push(elite);
      radius = maxRadius + 1;
    }
  }
  return { inspirations: chosen, radius };
}

export function sample(elites: readonly Elite[], count: number, maxRadius: number, random: SeededRandom, ring: RingDistance = chebyshev): Sample | undefined {
  if (elites.length === 0) return undefined;
  const base = random.pick(elites);
  return { base, ...selectInspirations(base, elites, count, maxRadius, random, ring) };
}
