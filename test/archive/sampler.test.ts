import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cellKey } from '../../src/scheduler/archive/grid.ts';
import { SeededRandom } from '../../src/scheduler/random.ts';
import { sample, selectInspirations } from '../../src/scheduler/sampler.ts';
import type { Elite } from '../../src/shared/db/archive.ts';

function elite(commit: string, cell: number[], fitness = 1): Elite {
  return { experimentId: 'e', island: 0, cellKey: cellKey(cell), cell, descriptor: cell.map((c) => c / 10), commitHash: commit, jobId: null, fitness, source: 'ingestion' };
}

const base = elite('base', [5, 5]);
const ring1 = [elite('r1a', [4, 5]), elite('r1b', [6, 6])];
const ring2 = [elite('r2a', [3, 5]), elite('r2b', [7, 3]), elite('r2c', [5, 7])];
const far = [elite('far1', [0, 0]), elite('far2', [9, 9])];
const all = [base, ...ring1, ...ring2, ...far];

describe('sampler neighbourhood', () => {
  test('inspirations come from radius 1 first', () => {
    const { inspirations, radius } = selectInspirations(base, all, 2, 3, new SeededRandom(1));
    assert.deepEqual(inspirations.map((e) => e.commitHash).sort(), ['r1a', 'r1b']);
    assert.equal(radius, 1);
  });

  test('the radius grows when the nearer rings run out', () => {
    for (let seed = 0; seed < 20; seed++) {
      const { inspirations, radius } = selectInspirations(base, all, 4, 3, new SeededRandom(seed));
      const names = inspirations.map((e) => e.commitHash);
      assert.equal(radius, 2);
      assert.deepEqual(names.slice(0, 2).sort(), ['r1a', 'r1b'], 'ring 1 is used up before ring 2');
      assert.equal(names.length, 4);
      assert.ok(names.slice(2).every((name) => name.startsWith('r2')));
    }
  });

  test('past the maximum radius, random elites fill the rest', () => {
    const { inspirations, radius } = selectInspirations(base, all, 7, 2, new SeededRandom(3));
    assert.equal(inspirations.length, 7);
    assert.equal(radius, 3);
    assert.deepEqual(inspirations.slice(5).map((e) => e.commitHash).sort(), ['far1', 'far2']);
    const capped = selectInspirations(base, all, 7, 1, new SeededRandom(3));
    assert.deepEqual(capped.inspirations.slice(0, 2).map((e) => e.commitHash).sort(), ['r1a', 'r1b']);
    assert.equal(capped.inspirations.length, 7, 'ring 2 counts as random once beyond the maximum radius');
  });

  test('never inspires with the base itself', () => {
    const { inspirations } = selectInspirations(base, all, 20, 10, new SeededRandom(9));
    assert.equal(inspirations.length, all.length - 1);
    assert.ok(!inspirations.some((e) => e.commitHash === 'base'));
  });
});

describe('sampler seeding', () => {
  const draw = (seed: number) => {
    const random = new SeededRandom(seed);
    return Array.from({ length: 10 }, () => {
      const picked = sample(all, 3, 2, random)!;
      return [picked.base.commitHash, ...picked.inspirations.map((e) => e.commitHash)].join(' ');
    });
  };

  test('the same seed gives the same bases and inspirations', () => {
    assert.deepEqual(draw(42), draw(42));
  });

  test('another seed gives another sequence', () => {
    assert.notDeepEqual(draw(42), draw(43));
  });

  test('the base is drawn uniformly from the elites', () => {
    const random = new SeededRandom(7);
    const counts = new Map<string, number>();
    for (let i = 0; i < 8000; i++) {
      const name = sample(all, 0, 1, random)!.base.commitHash;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    assert.equal(counts.size, all.length);
    for (const count of counts.values()) assert.ok(Math.abs(count - 1000) < 150, `count ${count} is far from uniform`);
  });

  test('a generator restored from its saved state continues the same sequence', () => {
    const a = new SeededRandom(5);
    a.next();
    a.next();
    const b = new SeededRandom(a.state);
    assert.deepEqual([a.next(), a.next()], [b.next(), b.next()]);
  });
});
