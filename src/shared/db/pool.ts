import pg from 'pg';
import type { DatabaseSettings } from '../settings/index.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** Anything that runs a query: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

// Timestamps come back as Date and bigint counts as numbers, which is what callers expect.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));
pg.types.setTypeParser(pg.types.builtins.NUMERIC, (value) => Number(value));

export interface PoolOptions {
  readonly url: string;
  readonly settings: DatabaseSettings;
  readonly applicationName: string;
  readonly max?: number;
}

/**
 * A small pool whose connections resolve Loreley's tables by search_path, so SQL names tables
 * without a schema prefix and tests can isolate themselves with their own schema.
 */
export function createPool(options: PoolOptions): Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max ?? options.settings.poolMax,
    application_name: options.applicationName,
    options: `-c search_path=${options.settings.schema},public`,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 15_000,
  });
  // An idle client that loses its connection (database restart) must not crash the process; the
  // next query reconnects.
  pool.on('error', () => undefined);
  // A checked-out client has no listener of the pool's: when the server goes away mid-transaction,
  // pg emits 'error' on it besides failing its query, and an unheard 'error' would crash the
  // process. The query's own rejection carries the error to the caller.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

export async function withTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Postgres error code, when the error came from the server. */
export function pgErrorCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'code' in error ? String((error as { code: unknown }).code) : undefined;
}

export const PG_LOCK_NOT_AVAILABLE = '55P03';
export const PG_UNDEFINED_TABLE = '42P01';
