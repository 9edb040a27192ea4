import type { Pool, Queryable } from './pool.ts';

/** SQL for advisory locks, keyed by text. Session locks die with their connection, never stale. */

/** Runs `fn` holding a session advisory lock on a pooled connection, waiting for it if taken. */
export async function withSessionLock<T>(pool: Pool, key: string, fn: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [key]);
    try {
      return await fn();
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [key]);
    }
  } finally {
    client.release();
  }
}

/** Takes a session lock on `db`'s connection without waiting; true when taken. */
export async function tryLock(db: Queryable, key: string): Promise<boolean> {
  const { rows } = await db.query<{ locked: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS locked', [key]);
  return rows[0].locked;
}

export async function unlock(db: Queryable, key: string): Promise<void> {
  await db.query('SELECT pg_advisory_unlock(hashtextextended($1, 0))', [key]);
}
