import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { getJob } from '../../src/shared/db/jobs.ts';
import { migrate, MIGRATIONS } from '../../src/shared/db/migrations/index.ts';
import { createPool } from '../../src/shared/db/pool.ts';
import type { DatabaseSettings } from '../../src/shared/settings/index.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';

after(() => stopTestServer());

const DATABASE: DatabaseSettings = { url: undefined, schema: 'loreley', bossSchema: 'pgboss', poolMax: 2 };

test('migration 4 moves resends and ingestion_attempts from the payload to columns', async () => {
  const url = await createTestDatabase();
  const pool = createPool({ url, settings: DATABASE, applicationName: 'loreley-test' });
  try {
    assert.deepEqual(await migrate(pool, 'loreley', MIGRATIONS.filter((m) => m.version < 4)), [1, 2, 3]);
    const experimentId = '11111111-1111-4111-8111-111111111111';
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO loreley.evolution_jobs (experiment_id, base_commit, payload) VALUES
         ($1, 'a', '{"resends": 2, "ingestion_attempts": 1, "seed": true}'),
         ($1, 'b', '{"sampler": {"island": 0}}')
       RETURNING id`,
      [experimentId],
    );
    assert.deepEqual(await migrate(pool, 'loreley'), [4]);
    assert.deepEqual(await migrate(pool, 'loreley'), [], 'applied once');
    const counted = await getJob(pool, rows[0].id);
    assert.equal(counted?.resends, 2);
    assert.equal(counted?.ingestionAttempts, 1);
    assert.deepEqual(counted?.payload, { seed: true }, 'the counters left the payload; the rest stays');
    const plain = await getJob(pool, rows[1].id);
    assert.equal(plain?.resends, 0);
    assert.equal(plain?.ingestionAttempts, 0);
    assert.deepEqual(plain?.payload, { sampler: { island: 0 } });
  } finally {
    await pool.end();
  }
});
