#!/usr/bin/env node
// Offline mutation operator for the circle-packing example: no LLM, no network. It perturbs the
// numbers inside pack.js's EVOLVE-BLOCK with Gaussian noise (a few centres at a time, sometimes
// one moved anywhere) and writes the file back. It is a plain evolutionary operator, so the whole
// Loreley pipeline runs and improves without an API key; WORKER_AGENT_BACKEND=openai replaces it.
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';

const FILE = 'pack.js';
const source = readFileSync(FILE, 'utf8');
const start = source.indexOf('// EVOLVE-BLOCK-START');
const end = source.indexOf('// EVOLVE-BLOCK-END');
if (start < 0 || end < 0) {
  process.stderr.write('pack.js has no EVOLVE-BLOCK markers\n');
  process.exit(2);
}

// Seeded by the job id, so a retried job makes the same change.
let state = createHash('sha256').update(process.env.LORELEY_JOB_ID ?? String(Date.now())).digest().readUInt32LE(0) || 1;
function random() {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state / 0x100000000;
}
function gaussian() {
  return Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
}

const block = source.slice(start, end);
const centersMatch = /const CENTERS = \[([\s\S]*?)\];/.exec(block);
const centers = [...centersMatch[1].matchAll(/\[\s*([-\d.e]+)\s*,\s*([-\d.e]+)\s*\]/g)].map((m) => [Number(m[1]), Number(m[2])]);

// Three moves, as an evolutionary operator would mix them: nudge a few centres, move one anywhere,
// or spread or gather the whole layout about the middle of the square.
const moved = [];
let summary;
const pick = random();
if (pick < 0.35) {
  const factor = 1 + 0.04 * gaussian();
  for (const c of centers) {
    c[0] = Math.min(0.999, Math.max(0.001, 0.5 + (c[0] - 0.5) * factor));
    c[1] = Math.min(0.999, Math.max(0.001, 0.5 + (c[1] - 0.5) * factor));
  }
  summary = `Scale the layout about the centre by ${factor.toFixed(4)}`;
} else if (pick < 0.45) {
  const i = Math.floor(random() * centers.length);
  centers[i] = [0.05 + 0.9 * random(), 0.05 + 0.9 * random()];
  summary = `Move centre ${i} to (${centers[i][0].toFixed(3)}, ${centers[i][1].toFixed(3)})`;
} else {
  const scale = [0.005, 0.02, 0.06][Math.floor(random() * 3)];
  const moves = 1 + Math.floor(random() * 4);
  for (let k = 0; k < moves; k += 1) {
    const i = Math.floor(random() * centers.length);
    centers[i] = centers[i].map((v) => Math.min(0.999, Math.max(0.001, v + scale * gaussian())));
    moved.push(i);
  }
  summary = `Perturb centres ${[...new Set(moved)].sort((a, b) => a - b).join(', ')} (sigma ${scale})`;
}
const rows = [];
for (let i = 0; i < centers.length; i += 5) {
  rows.push(`  ${centers.slice(i, i + 5).map(([x, y]) => `[${x.toFixed(6)}, ${y.toFixed(6)}]`).join(', ')},`);
}
const newBlock = block.replace(/const CENTERS = \[[\s\S]*?\];/, `const CENTERS = [\n${rows.join('\n')}\n];`);
writeFileSync(FILE, source.slice(0, start) + newBlock + source.slice(end));
process.stdout.write(`${JSON.stringify({ summary })}\n`);
