/** The MAP-Elites grid: descriptor coordinates in [0, 1] per dimension to cell indices and back. */

export function cellOf(descriptor: readonly number[], cellsPerDim: number): number[] {
  return descriptor.map((value) => {
    const clamped = Number.isFinite(value) ? Math.min(Math.max(value, 0), 1) : 0;
    return Math.min(cellsPerDim - 1, Math.floor(clamped * cellsPerDim));
  });
}

export function cellKey(cell: readonly number[]): string {
  return cell.join(',');
}

export function chebyshev(a: readonly number[], b: readonly number[]): number {
  let distance = 0;
  for (let i = 0; i < a.length; i++) distance = Math.max(distance, Math.abs(a[i] - (b[i] ?? 0)));
  return distance;
}

/** Maps a value from [min, max] to [0, 1], clamped. */
export function normalizeRange(value: number, min: number, max: number): number {
  if (!Number.isFinite(value)) return 0;
  return Math.min(Math.max((value - min) / (max - min), 0), 1);
}
