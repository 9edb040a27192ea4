import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { insertElites, listElites } from '../../src/shared/db/archive.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture } from '../scheduler/fixture.ts';

after(() => stopTestServer());

test('insertElites writes every column exactly: cells and descriptors sliced from one array, null job ids, doubles to the last bit', async () => {
  const fixture = await createFixture();
  try {
    const experimentId = fixture.settings.experiment.uuid;
    const elites = Array.from({ length: 300 }, (_, i) => ({
      island: i % 3,
      cellKey: `${i},${i % 7}`,
      cell: [i, i % 7],
      descriptor: [Math.PI / (i + 1), 1 / 3 + i * 1e-17, Number.MIN_VALUE * i],
      commitHash: `commit-${i}`,
      jobId: i % 2 === 0 ? null : `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      fitness: i === 5 ? -Infinity : Math.sqrt(i) - 1e-300,
      source: i % 3 === 0 ? 'refit' : 'ingestion',
    }));
    await insertElites(fixture.pool, experimentId, elites);
    const stored = await listElites(fixture.pool, experimentId);
    const byKey = new Map(stored.map((e) => [`${e.island}|${e.cellKey}`, e]));
    assert.equal(stored.length, elites.length);
    for (const elite of elites) assert.deepEqual(byKey.get(`${elite.island}|${elite.cellKey}`), { experimentId, ...elite });
    const { rows } = await fixture.pool.query<{ lower: number }>('SELECT DISTINCT array_lower(cell, 1) AS lower FROM archive_elites WHERE experiment_id = $1', [experimentId]);
    assert.deepEqual(rows, [{ lower: 1 }], 'slices numbered from 1 like any other array');
  } finally {
    await fixture.close();
  }
});
