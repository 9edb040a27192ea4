import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { getJob } from '../../src/shared/db/jobs.ts';
import { migrate, MIGRATIONS } from '../../src/shared/db/migrations/index.ts';
import { lockForTransaction, tryLock, unlock, withSessionLock } from '../../src/shared/db/locks.ts';
import { createPool, withTransaction } from '../../src/shared/db/pool.ts';
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
    assert.deepEqual(await migrate(pool, 'loreley', MIGRATIONS.filter((m) => m.version <= 4)), [4]);
    assert.deepEqual(await migrate(pool, 'loreley', MIGRATIONS.filter((m) => m.version <= 4)), [], 'applied once');
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

test('processes starting at once migrate once: the others wait on the migration lock and find nothing to do', async () => {
  const url = await createTestDatabase();
  const pools = [0, 1, 2].map(() => createPool({ url, settings: DATABASE, applicationName: 'loreley-test' }));
  try {
    const ran = await Promise.all(pools.map((pool) => migrate(pool, 'loreley')));
    assert.deepEqual(ran.map((versions) => versions.length).sort(), [0, 0, MIGRATIONS.length]);
  } finally {
    await Promise.all(pools.map((pool) => pool.end()));
  }
});

test('every advisory lock helper hashes a key the same way: a waited-for lock is the lock a try sees', async () => {
  const url = await createTestDatabase();
  const pool = createPool({ url, settings: DATABASE, applicationName: 'loreley-test' });
  const other = createPool({ url, settings: DATABASE, applicationName: 'loreley-test', max: 1 });
  try {
    const seen = await withSessionLock(pool, 'loreley.test.key', () => tryLock(other, 'loreley.test.key'));
    assert.equal(seen, false, 'held by withSessionLock, refused to tryLock');
    const afterwards = await tryLock(other, 'loreley.test.key');
    assert.equal(afterwards, true, 'released when withSessionLock returns');
    await unlock(other, 'loreley.test.key');
    const inTransaction = await withTransaction(pool, async (client) => {
      await lockForTransaction(client, 'loreley.test.key');
      return tryLock(other, 'loreley.test.key');
    });
    assert.equal(inTransaction, false, 'a transaction lock excludes a session lock on the same key');
  } finally {
    await pool.end();
    await other.end();
  }
});
