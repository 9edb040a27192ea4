// Packs 26 circles into the unit square, maximising the sum of their radii.
// The centres below are what evolution changes; radii follow from them (see radiiFor).
// Prints {"circles": [[x, y, r], ...]} on stdout.

// EVOLVE-BLOCK-START
const CENTERS = [
  [0.2, 0.2], [0.35, 0.2], [0.5, 0.2], [0.65, 0.2], [0.8, 0.2],
  [0.2, 0.35], [0.35, 0.35], [0.5, 0.35], [0.65, 0.35], [0.8, 0.35],
  [0.2, 0.5], [0.35, 0.5], [0.5, 0.5], [0.65, 0.5], [0.8, 0.5],
  [0.2, 0.65], [0.35, 0.65], [0.5, 0.65], [0.65, 0.65], [0.8, 0.65],
  [0.2, 0.8], [0.35, 0.8], [0.5, 0.8], [0.65, 0.8], [0.8, 0.8],
  [0.275, 0.275],
];
const PASSES = 40;
// EVOLVE-BLOCK-END

function clamp(value) {
  return Math.min(1, Math.max(0, value));
}

// Starts every radius at half the distance to its nearest neighbour (or the nearest wall), which
// is always a valid packing, then lets each grow into the room its neighbours leave, pass after pass.
function radiiFor(centers, passes) {
  const wall = ([x, y]) => Math.min(x, y, 1 - x, 1 - y);
  const distance = (a, b) => Math.hypot(a[0] - b[0], a[1] - b[1]);
  const radii = centers.map((c, i) => Math.min(wall(c), ...centers.filter((_, j) => j !== i).map((d) => distance(c, d) / 2)));
  for (let pass = 0; pass < passes; pass += 1) {
    for (let i = 0; i < centers.length; i += 1) {
      let r = wall(centers[i]);
      for (let j = 0; j < centers.length; j += 1) {
        if (j !== i) r = Math.min(r, distance(centers[i], centers[j]) - radii[j]);
      }
      radii[i] = Math.max(radii[i], r);
    }
  }
  return radii;
}

const centers = CENTERS.map(([x, y]) => [clamp(x), clamp(y)]);
const radii = radiiFor(centers, PASSES);
process.stdout.write(`${JSON.stringify({ circles: centers.map(([x, y], i) => [x, y, radii[i]]) })}\n`);
