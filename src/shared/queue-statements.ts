import bossPackage from 'pg-boss/package.json' with { type: 'json' };
import * as plans from 'pg-boss/dist/plans.js';
import type { Queryable } from './db/pool.ts';
import type { EvolutionJobMessage, QueueJob } from './queue-message.ts';
import type { Settings } from './settings/index.ts';

/**
 * pg-boss's own statements, run by a worker on its own connections, without pg-boss's runtime.
 *
 * A worker needs six of pg-boss's statements (fetch, complete, fail, touch, cancel, send) and none
 * of its scheduling, monitoring or telemetry: loading `pg-boss` itself takes a bare node from 42 to
 * 70 MB (cron-parser, luxon, rrule-temporal, OpenTelemetry). `pg-boss/dist/plans.js` builds every
 * statement pg-boss runs and imports only node:assert and three small modules of its own, so the
 * SQL stays pg-boss's, including its attempt fence (`retry_count`), its retry and backoff on fail
 * and its heartbeat column, while the worker runs it inside its own transactions (fetch with the
 * claim, completion with the result).
 *
 * `plans.js` is an internal module of pg-boss: the worker checks at start that the installed
 * pg-boss is the version these calls were read against (`PINNED_PG_BOSS`), and its schema the one
 * that version installs, and refuses to start otherwise rather than run a statement whose shape
 * changed. package.json pins the same exact version.
 */

/** The pg-boss version whose `plans.js` (signatures, and the semantics of `manager.js` mirrored here) this module was written against. */
export const PINNED_PG_BOSS = '12.38.0';

/** The queue's row, as the worker's statements need it. */
export interface QueueDefinition {
  readonly name: string;
  /** The job table holding this queue's jobs (`job`, or a partition of its own). */
  readonly table: string;
  readonly policy: string;
  readonly notify: boolean;
  readonly retryLimit: number;
  readonly retryDelay: number;
  readonly retryBackoff: boolean;
  readonly expireInSeconds: number;
  readonly heartbeatSeconds: number | null;
  readonly deadLetter: string | null;
}

/** A queue job as fetched: the worker's `QueueJob` plus the limits pg-boss's worker loop enforces. */
export interface FetchedJob extends QueueJob {
  /** The handler's time limit: past it the attempt is failed (pg-boss's `expireInSeconds`). */
  readonly expireInSeconds: number;
  /** Null: no heartbeat. Otherwise the claim is refreshed every half of it (pg-boss's `touch`). */
  readonly heartbeatSeconds: number | null;
}

/** Thrown when the installed pg-boss or its schema is not what this module was written for. */
export class QueueVersionError extends Error {
  override readonly name = 'QueueVersionError';
}

/** Fails loudly when the installed pg-boss is not the pinned one. */
export function assertPinnedPgBoss(version: string = bossPackage.version): void {
  if (version !== PINNED_PG_BOSS) {
    throw new QueueVersionError(
      `pg-boss ${version} is installed, but Loreley's worker runs pg-boss ${PINNED_PG_BOSS}'s own statements (src/shared/queue-statements.ts): install pg-boss ${PINNED_PG_BOSS} (npm ci), or re-read those statements against ${version} and move the pin`,
    );
  }
}

/** Why the database's queue cannot be used as it is (schema missing or older, queue missing or with other settings); null when it can. */
export async function queueDrift(db: Queryable, settings: Settings): Promise<string | null> {
  const schema = settings.database.bossSchema;
  const { rows: exists } = await db.query<{ name: string | null }>(plans.versionTableExists(schema));
  if (!exists[0]?.name) return `the queue schema ${schema} is not installed`;
  const { rows: version } = await db.query<{ version: string }>(plans.getVersion(schema));
  const installed = Number(version[0]?.version);
  if (installed !== bossPackage.pgboss.schema) return `the queue schema ${schema} is at version ${installed}, pg-boss ${bossPackage.version} uses ${bossPackage.pgboss.schema}`;
  const queue = settings.queue;
  const found = await readQueue(db, schema, queue.name);
  if (!found) return `the queue ${queue.name} does not exist`;
  const dead = await readQueue(db, schema, queue.deadLetterName);
  if (!dead) return `the dead-letter queue ${queue.deadLetterName} does not exist`;
  const wanted: Partial<Record<keyof QueueDefinition, unknown>> = {
    retryLimit: queue.maxRetries,
    retryDelay: queue.retryDelaySeconds,
    retryBackoff: queue.retryBackoff,
    expireInSeconds: queue.timeLimitSeconds,
    heartbeatSeconds: queue.heartbeatSeconds ?? null,
    deadLetter: queue.deadLetterName,
    notify: true,
  };
  for (const [key, value] of Object.entries(wanted)) {
    if (found[key as keyof QueueDefinition] !== value) return `the queue ${queue.name} has ${key} ${String(found[key as keyof QueueDefinition])}, the settings say ${String(value)}`;
  }
  return null;
}

async function readQueue(db: Queryable, schema: string, name: string): Promise<QueueDefinition | undefined> {
  const query = plans.getQueues(schema, [name]);
  const { rows } = await db.query<QueueDefinition & { heartbeatSeconds: number | null }>(query.text, query.values);
  const row = rows[0];
  if (!row) return undefined;
  return {
    name: row.name, table: row.table, policy: row.policy, notify: Boolean(row.notify),
    retryLimit: Number(row.retryLimit), retryDelay: Number(row.retryDelay), retryBackoff: Boolean(row.retryBackoff),
    expireInSeconds: Number(row.expireInSeconds), heartbeatSeconds: row.heartbeatSeconds === null ? null : Number(row.heartbeatSeconds),
    deadLetter: row.deadLetter ?? null,
  };
}

/**
 * The statements of one queue, built once. Every call takes the connection to run on, so it
 * joins the caller's transaction; settles of an attempt are fenced to it (id and retry count) as
 * pg-boss fences its own worker's, so a worker whose claim lapsed cannot touch a later attempt.
 */
export class QueueStatements {
  readonly queue: QueueDefinition;
  private readonly fetchText: string;
  private readonly completeFenced: string;
  private readonly completeAny: string;
  private readonly failFenced: string;
  private readonly touchFenced: string;
  private readonly cancelAny: string;
  private readonly insert: string;
  private readonly readyText: string;

  private constructor(schema: string, queue: QueueDefinition) {
    this.queue = queue;
    const { name, table, policy } = queue;
    const fetch = plans.fetchNextJob({ schema, table, name, policy, limit: 1, includeMetadata: true });
    // No fetch option that takes a parameter is used: the statement is plain text.
    if (fetch.values.length > 0) throw new QueueVersionError('pg-boss fetch statement unexpectedly takes parameters');
    this.fetchText = fetch.text;
    this.completeFenced = plans.completeJobs(schema, table, false, true);
    // pg-boss's complete(name, id) given a bare id: any attempt, still active only.
    this.completeAny = plans.completeJobs(schema, table, false, false);
    this.failFenced = plans.failJobsById(schema, table, true);
    this.touchFenced = plans.touchJobs(schema, table, true);
    this.cancelAny = plans.cancelJobs(schema, table, false);
    this.insert = plans.insertJobs(schema, { table, name, returnId: true, notify: queue.notify });
    // The one statement of ours on pg-boss's table, read-only: pg-boss has no live "anything
    // ready?" (its queue stats are a monitor interval old). The predicate is its fetch's for a
    // standard queue (fetchNextJob: name, state before active, not blocked, start_after due).
    if (policy !== 'standard') throw new QueueVersionError(`the queue ${name} has policy ${policy}; the worker's statements assume pg-boss's standard policy`);
    this.readyText = `SELECT EXISTS (SELECT 1 FROM ${schema}.${table} WHERE name = $1 AND state < 'active' AND NOT blocked AND start_after <= ${schema}.job_now()) AS ready`;
  }

  /** Reads the queue's definition; throws when the pinned pg-boss is not installed or the queue is missing. */
  static async load(db: Queryable, settings: Settings): Promise<QueueStatements> {
    assertPinnedPgBoss();
    const schema = settings.database.bossSchema;
    const queue = await readQueue(db, schema, settings.queue.name);
    if (!queue) throw new QueueVersionError(`the queue ${settings.queue.name} does not exist in ${schema}`);
    return new QueueStatements(schema, queue);
  }

  /** Takes the next queue job (pg-boss's fetch: highest priority, then oldest; marks it active and counts the attempt). */
  async fetch(db: Queryable): Promise<FetchedJob | undefined> {
    const { rows } = await db.query<FetchedJob>(this.fetchText);
    const row = rows[0];
    if (!row) return undefined;
    return {
      id: row.id, data: row.data, priority: Number(row.priority), retryCount: Number(row.retryCount), retryLimit: Number(row.retryLimit),
      expireInSeconds: Number(row.expireInSeconds), heartbeatSeconds: row.heartbeatSeconds ? Number(row.heartbeatSeconds) : null,
    };
  }

  /**
   * Whether a job is ready to fetch now, as the caller's transaction sees it: a job another
   * worker is fetching at this moment still counts (its fetch has not committed), so this errs
   * towards "yes".
   */
  async anyReady(db: Queryable): Promise<boolean> {
    const { rows } = await db.query<{ ready: boolean }>(this.readyText, [this.queue.name]);
    return rows[0]?.ready === true;
  }

  /** Completes the attempt `job` holds; false when that attempt is not active any more (nothing changed). */
  async complete(db: Queryable, job: Pick<QueueJob, 'id' | 'retryCount'>, output: object): Promise<boolean> {
    const { rows } = await db.query<{ count: number }>(this.completeFenced, [this.queue.name, [job.id], jsonOutput(output), plans.attemptPairs([job.id], [job.retryCount])]);
    return Number(rows[0]?.count) > 0;
  }

  /** Completes the queue job whatever attempt holds it (a result recorded from the spool). */
  async completeAnyAttempt(db: Queryable, queueJobId: string, output: object): Promise<void> {
    await db.query(this.completeAny, [this.queue.name, [queueJobId], jsonOutput(output)]);
  }

  /**
   * Fails the attempt `job` holds with `error` as its output: pg-boss's own statement, so the job
   * is retried after the queue's delay and backoff while retries remain, else failed (and copied
   * to the dead-letter queue). False when that attempt is not active any more.
   */
  async fail(db: Queryable, job: Pick<QueueJob, 'id' | 'retryCount'>, error: unknown): Promise<boolean> {
    const { rows } = await db.query<{ count: number }>(this.failFenced, [this.queue.name, [job.id], jsonOutput(errorOutput(error)), plans.attemptPairs([job.id], [job.retryCount])]);
    return Number(rows[0]?.count) > 0;
  }

  /** Refreshes the heartbeat of the attempts held; gives the ids still held (a missing one was taken from us). */
  async touch(db: Queryable, jobs: readonly Pick<QueueJob, 'id' | 'retryCount'>[]): Promise<Set<string>> {
    const ids = jobs.map((job) => job.id);
    const { rows } = await db.query<{ ids: string[] }>(this.touchFenced, [this.queue.name, ids, plans.attemptPairs(ids, jobs.map((job) => job.retryCount))]);
    return new Set(rows[0]?.ids ?? []);
  }

  /** Cancels the queue job (waiting, retrying or active); a no-op on a settled one. */
  async cancel(db: Queryable, queueJobId: string): Promise<void> {
    await db.query(this.cancelAny, [this.queue.name, [queueJobId]]);
  }

  /** Sends a queue job for `message` with `priority` (pg-boss's send; NOTIFYs when the queue does). */
  async send(db: Queryable, message: EvolutionJobMessage, priority: number): Promise<string> {
    // pg-boss's send payload, with the fields a plain send leaves unset.
    const job = { id: null, name: this.queue.name, data: message, priority, singletonKey: null, singletonOffset: 0, groupId: null, groupTier: null, deadLetter: null };
    const { rows } = await db.query<{ id: string }>(this.insert, [JSON.stringify([job])]);
    if (!rows[0]) throw new Error(`the queue ${this.queue.name} refused job ${message.jobId}`);
    return rows[0].id;
  }
}

/** pg-boss's output column: an object as it is, anything else wrapped as `{ value }`. */
function jsonOutput(output: unknown): string {
  return JSON.stringify(typeof output === 'object' && output !== null && !Array.isArray(output) ? output : { value: output });
}

/** An error as pg-boss stores a failed handler's (serialize-error): name, message, stack and own fields. */
function errorOutput(error: unknown): object {
  if (!(error instanceof Error)) return typeof error === 'object' && error !== null ? error : { value: error };
  const own: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(error)) if (typeof value !== 'function') own[key] = value;
  return { ...own, name: error.name, message: error.message, stack: error.stack };
}
