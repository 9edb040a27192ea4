import { lockForTransaction } from '../locks.ts';
import { withTransaction, type Pool } from '../pool.ts';
import { coreMigration } from './001_core.ts';
import { archiveMigration } from './002_archive.ts';
import { llmMigration } from './003_llm.ts';
import { jobCountersMigration } from './004_job_counters.ts';
import { indexesMigration } from './006_indexes.ts';
import { notesMigration } from './007_notes.ts';
import { archiveVersionMigration } from './008_archive_version.ts';
import { embeddingBytesMigration } from './009_embedding_bytes.ts';
import { jobCountMigration } from './010_job_count.ts';
import { refitEveryApplyMigration } from './011_refit_every_apply.ts';
import type { Migration } from './migration.ts';

/** In version order. A released migration is never edited; add a new one. */
export const MIGRATIONS: readonly Migration[] = [coreMigration, archiveMigration, llmMigration, jobCountersMigration, indexesMigration, notesMigration, archiveVersionMigration, embeddingBytesMigration, jobCountMigration, refitEveryApplyMigration];

function lockKey(schema: string): string {
  return `loreley.migrate.${schema}`;
}

/**
 * Brings the schema up to date. Many processes start at once, so the whole run holds a
 * transaction-scoped advisory lock: the first applies, the others wait and then find nothing to do.
 */
export async function migrate(pool: Pool, schema: string, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  return withTransaction(pool, async (client) => {
    await lockForTransaction(client, lockKey(schema));
    await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await client.query(`SET LOCAL search_path = "${schema}", public`);
    await client.query(`
      CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
    const { rows } = await client.query<{ version: number }>('SELECT version FROM schema_migrations');
    const applied = new Set(rows.map((row) => row.version));
    const ran: number[] = [];
    for (const migration of [...migrations].sort((a, b) => a.version - b.version)) {
      if (applied.has(migration.version)) continue;
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
      ran.push(migration.version);
    }
    return ran;
  });
}
