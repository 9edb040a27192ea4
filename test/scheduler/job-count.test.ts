import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { countEvolutionJobs, insertJob } from '../../src/shared/db/jobs.ts';
import { migrate, MIGRATIONS } from '../../src/shared/db/migrations/index.ts';
import { createPool, withTransaction, type Pool } from '../../src/shared/db/pool.ts';
import type { DatabaseSettings } from '../../src/shared/settings/index.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';

/**
 * The job budget's count (migration 10): kept by triggers on evolution_jobs, so the scheduler
 * reads one row instead of counting every job row three times a tick. It must equal the count of
 * the rows whoever inserts or deletes them, and start right over an existing database.
 */

after(() => stopTestServer());

const DATABASE: DatabaseSettings = { url: undefined, schema: 'loreley', bossSchema: 'pgboss', poolMax: 2 };
const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';

async function counted(pool: Pool, experimentId: string): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM loreley.evolution_jobs WHERE experiment_id = $1 AND kind = 'evolution'`, [experimentId]);
  return rows[0].n;
}

test('the evolution job count: backfilled by the migration, then kept by every insert and delete', async () => {
  const url = await createTestDatabase();
  const pool = createPool({ url, settings: DATABASE, applicationName: 'loreley-test' });
  try {
    await migrate(pool, 'loreley', MIGRATIONS.filter((m) => m.version < 10));
    await pool.query(
      `INSERT INTO loreley.evolution_jobs (experiment_id, kind, base_commit) VALUES
         ($1, 'baseline', 'r'), ($1, 'evolution', 'a'), ($1, 'evolution', 'b'), ($2, 'evolution', 'c')`,
      [A, B],
    );
    assert.deepEqual(await migrate(pool, 'loreley', MIGRATIONS.filter((m) => m.version <= 10)), [10]);
    assert.equal(await countEvolutionJobs(pool, A), 2, 'existing jobs counted, the baseline not');
    assert.equal(await countEvolutionJobs(pool, B), 1);
    assert.equal(await countEvolutionJobs(pool, '33333333-3333-4333-8333-333333333333'), 0, 'an experiment without jobs');

    // The scheduler's inserts, several in one transaction, one rolled back.
    await withTransaction(pool, async (client) => {
      for (const base of ['d', 'e', 'f']) await insertJob(client, { experimentId: A, baseCommit: base });
    });
    await withTransaction(pool, async (client) => {
      await insertJob(client, { experimentId: A, baseCommit: 'g' });
      throw new Error('rolled back');
    }).catch(() => undefined);
    assert.equal(await countEvolutionJobs(pool, A), 5);
    // A bulk insert over two experiments (as a rebuild restores), then deletes (as a drop does).
    await pool.query(`INSERT INTO loreley.evolution_jobs (experiment_id, base_commit) SELECT $1, 'h' || i FROM generate_series(1, 40) AS i`, [B]);
    await pool.query(`DELETE FROM loreley.evolution_jobs WHERE experiment_id = $1 AND base_commit IN ('a', 'd')`, [A]);
    for (const experimentId of [A, B]) assert.equal(await countEvolutionJobs(pool, experimentId), await counted(pool, experimentId));
    assert.equal(await countEvolutionJobs(pool, A), 3);
    assert.equal(await countEvolutionJobs(pool, B), 41);
  } finally {
    await pool.end();
  }
});
