import type { Pool, Queryable } from './pool.ts';

/**
 * SQL for advisory locks, keyed by text. Every lock hashes its key the same way, with the 64-bit
 * `hashtextextended`, so two keys collide only by a 64-bit accident and a lock taken here is the
 * lock any other caller means by the same key. Session locks die with their connection, never
 * stale; transaction locks end with their transaction.
 */
const LOCK_ID = 'hashtextextended($1, 0)';

/** Runs `fn` holding a session advisory lock on a pooled connection, waiting for it if taken. */
export async function withSessionLock<T>(pool: Pool, key: string, fn: () => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(`SELECT pg_advisory_lock(${LOCK_ID})`, [key]);
    try {
      return await fn();
    } finally {
      await client.query(`SELECT pg_advisory_unlock(${LOCK_ID})`, [key]);
    }
  } finally {
    client.release();
  }
}

/** Takes a session lock on `db`'s connection without waiting; true when taken. */
export async function tryLock(db: Queryable, key: string): Promise<boolean> {
  const { rows } = await db.query<{ locked: boolean }>(`SELECT pg_try_advisory_lock(${LOCK_ID}) AS locked`, [key]);
  return rows[0].locked;
}

export async function unlock(db: Queryable, key: string): Promise<void> {
  await db.query(`SELECT pg_advisory_unlock(${LOCK_ID})`, [key]);
}

/** Waits for a lock held until the end of the transaction `db` is in. */
export async function lockForTransaction(db: Queryable, key: string): Promise<void> {
  await db.query(`SELECT pg_advisory_xact_lock(${LOCK_ID})`, [key]);
}
