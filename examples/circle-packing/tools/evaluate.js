#!/usr/bin/env node
// Evaluator for the circle-packing example. Lives outside the evolved repository, so a mutation
// cannot change how it is judged. Runs `node pack.js` in the current directory (the job's
// worktree) with a timeout, checks the packing and prints one JSON object of metrics.
import { spawnSync } from 'node:child_process';

const N = 26;
// Overlap and boundary tolerance. Radii may touch (distance == r1 + r2) within this slack only.
const TOLERANCE = 1e-9;
// AlphaEvolve's published best sum of radii for 26 circles.
const REFERENCE_SUM = 2.635;
const TIMEOUT_MS = Number(process.env.CIRCLE_PACKING_TIMEOUT_MS ?? 10_000);

function report(sumRadii, valid, summary) {
  const combined = valid ? sumRadii / REFERENCE_SUM : 0;
  process.stdout.write(
    `${JSON.stringify({
      summary,
      metrics: [
        { name: 'sum_radii', value: valid ? sumRadii : 0, higher_is_better: true },
        { name: 'validity', value: valid ? 1 : 0, higher_is_better: true },
        { name: 'combined_score', value: combined, higher_is_better: true },
      ],
    })}\n`,
  );
}

function check(circles) {
  if (!Array.isArray(circles) || circles.length !== N) return `expected ${N} circles, got ${Array.isArray(circles) ? circles.length : typeof circles}`;
  for (const [index, circle] of circles.entries()) {
    if (!Array.isArray(circle) || circle.length !== 3 || !circle.every((v) => typeof v === 'number' && Number.isFinite(v))) {
      return `circle ${index} is not three finite numbers`;
    }
    const [x, y, r] = circle;
    if (!(r > 0)) return `circle ${index} has radius ${r}, not > 0`;
    if (x - r < -TOLERANCE || x + r > 1 + TOLERANCE || y - r < -TOLERANCE || y + r > 1 + TOLERANCE) {
      return `circle ${index} leaves the unit square`;
    }
  }
  for (let i = 0; i < N; i += 1) {
    for (let j = i + 1; j < N; j += 1) {
      const [xi, yi, ri] = circles[i];
      const [xj, yj, rj] = circles[j];
      if (Math.hypot(xi - xj, yi - yj) < ri + rj - TOLERANCE) return `circles ${i} and ${j} overlap`;
    }
  }
  return undefined;
}

const run = spawnSync(process.execPath, ['pack.js'], { encoding: 'utf8', timeout: TIMEOUT_MS, maxBuffer: 1024 * 1024 });
if (run.error || run.status !== 0) {
  const why = run.error?.code === 'ETIMEDOUT' ? `timed out after ${TIMEOUT_MS} ms` : `exited with ${run.status ?? run.signal}: ${(run.stderr ?? '').trim().slice(-300)}`;
  report(0, false, `pack.js ${why}`);
  process.exit(0);
}
let circles;
try {
  circles = JSON.parse(run.stdout).circles;
} catch {
  report(0, false, 'pack.js did not print JSON');
  process.exit(0);
}
const problem = check(circles);
const sum = problem ? 0 : circles.reduce((total, [, , r]) => total + r, 0);
report(sum, !problem, problem ? `invalid packing: ${problem}` : `valid packing, sum of radii ${sum.toFixed(6)}`);
