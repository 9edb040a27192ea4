import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { tryLock, unlock } from '../shared/db/locks.ts';
import type { Pool } from '../shared/db/pool.ts';

/**
 * One scheduler per experiment: a session-level advisory lock held on a connection of its own.
 * Postgres releases the lock the moment that connection dies (process killed, network lost), so a
 * standby polling `pg_try_advisory_lock` takes over without any lease to expire.
 *
 * The holder must stop scheduling as soon as `lost` aborts: after a lost connection another
 * scheduler may already hold the lock.
 */
export interface SchedulerLock {
  /** Aborted when the lock's connection fails or closes; the lock is then no longer ours. */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface AcquireLockOptions {
  /** How often a standby tries again (default 5 s). */
  readonly pollIntervalMs?: number;
  /** Called once when the lock is taken by someone else and this caller starts waiting. */
  readonly onStandby?: () => void;
}

export function schedulerLockKey(experimentUuid: string): string {
  return `loreley.scheduler.${experimentUuid}`;
}

/**
 * Resolves once the lock is held; rejects with the signal's reason when `signal` aborts first.
 * Connection errors while waiting are retried: a standby outlives a database restart.
 */
export async function acquireSchedulerLock(pool: Pool, experimentUuid: string, signal: AbortSignal, options: AcquireLockOptions = {}): Promise<SchedulerLock> {
  const pollIntervalMs = options.pollIntervalMs ?? 5000;
  let announced = false;
  while (true) {
    signal.throwIfAborted();
    const client = new pg.Client({
      ...connectionOptions(pool),
      application_name: `${pool.options.application_name ?? 'loreley'}-scheduler-lock`,
    });
    const lost = new AbortController();
    client.on('error', (error) => lost.abort(error));
    client.on('end', () => lost.abort(new Error('the scheduler lock connection closed')));
    try {
      await client.connect();
      while (!lost.signal.aborted) {
        signal.throwIfAborted();
        if (await tryLock(client, schedulerLockKey(experimentUuid))) {
          return {
            lost: lost.signal,
            async release() {
              if (lost.signal.aborted) return;
              await unlock(client, schedulerLockKey(experimentUuid)).catch(() => undefined);
              await client.end().catch(() => undefined);
            },
          };
        }
        if (!announced) {
          announced = true;
          options.onStandby?.();
        }
        await sleep(pollIntervalMs, undefined, { signal });
      }
    } catch (error) {
      await client.end().catch(() => undefined);
      if (signal.aborted) throw signal.reason;
      // A failed connection while waiting: try again after the poll interval.
      void error;
    }
    await client.end().catch(() => undefined);
    await sleep(pollIntervalMs, undefined, { signal });
  }
}

/** The pool's connection settings (URL or fields) for a client of our own. */
function connectionOptions(pool: Pool): pg.ClientConfig {
  const { connectionString, host, port, user, password, database, ssl, options } = pool.options;
  return { connectionString, host, port, user, password, database, ssl, options };
}
