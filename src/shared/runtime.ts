import type { Pool } from './db/pool.ts';
import { upsertWorker, type WorkerPresence } from './db/workers.ts';
import cluster from 'node:cluster';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from './backoff.ts';
import { isDatabaseUnavailable } from './db-availability.ts';
import { errorMessage } from './errors.ts';
import { CHILD_ENV, isLoreleyMessage, type ChildMessage, type ChildState, type HeldJob, type SupervisorMessage } from './ipc.ts';
import { answerMetricsRequests } from './metrics.ts';
import { createProcessLog, urlPasswords, type Logger, type ProcessLog, type Role } from './logger.ts';
import type { PgBoss } from './queue.ts';
import { apiKeys } from './secrets.ts';
import { registerSecrets } from './storable.ts';
import { liveCommandGroups, onCommandGroupsChange } from './subprocess.ts';
import type { Settings } from './settings/index.ts';
import { openWorkerDatabase } from './worker-database.ts';

/**
 * What a worker or scheduler process has once it is up: its identity, logger, database pool and
 * queue, and the channel to its supervisor. Built once by `startChildRuntime` and passed down;
 * job and scheduling code never touch `process` themselves.
 */
export interface ChildRuntime {
  readonly settings: Settings;
  readonly role: Role;
  readonly workerId: string;
  readonly host: string;
  readonly logger: Logger;
  readonly log: ProcessLog;
  readonly pool: Pool;
  /**
   * The scheduler's pg-boss (maintenance, sends, what became of a queue job). A worker has none:
   * it runs pg-boss's statements itself (`queue-statements.ts`) and never loads pg-boss's runtime.
   */
  readonly boss: PgBoss | undefined;
  /** Aborted when the process is asked to drain (supervisor message, SIGTERM or SIGINT). */
  readonly drainSignal: AbortSignal;
  /** Seconds a drain may take before jobs in hand are handed back. */
  drainTimeoutSeconds(): number;
  /** Aborted when the process must stop at once (second signal, or `stop-now`). */
  readonly stopSignal: AbortSignal;
  /**
   * Tells the supervisor (when there is one) at once, and the `workers` table a moment later, what
   * this process is doing: a state that lasts less than that moment (idle between two jobs of a
   * backlog) is never written. `moreReady`, with `busy`: whether the fetch that took the job left
   * more ready (the supervisor then wakes the next idle worker).
   */
  setState(state: ChildState, jobId?: string | null, moreReady?: boolean): void;
  /**
   * For a statement that records this process's presence along with its own work (the worker's
   * claim): waits for presence writes under way, so the row it writes is the newest, and gives
   * the row as of now. `presenceRecorded(row)` once it committed.
   */
  presenceToRecord(): Promise<WorkerPresence>;
  presenceRecorded(row: WorkerPresence): void;
  /** Tells the supervisor which queue jobs this process holds, so it can hand them back if we die. */
  setHeldJobs(jobs: readonly HeldJob[]): void;
  /**
   * True when the supervisor wakes this worker (`wake` messages) for the jobs sent to the queue:
   * its queue does not LISTEN, so its own polling is only the backstop for a lost wake.
   */
  readonly wokenBySupervisor: boolean;
  /** Calls `listener` on each `wake` from the supervisor. */
  onWake(listener: () => void): void;
  /** Sends a message to the supervisor; a no-op when unsupervised. */
  send(message: ChildMessage): void;
  /** Stops heartbeats, the queue and the pool; flushes the log. */
  close(): Promise<void>;
}

export interface ChildRuntimeOptions {
  readonly settings: Settings;
  readonly role: 'worker' | 'scheduler';
  /** From the supervisor (LORELEY_WORKER_ID) or the command line. */
  readonly workerId?: string;
  /** pg-boss maintenance (expiry, heartbeat monitor); the scheduler runs it. */
  readonly supervise: boolean;
}

const PRESENCE_INTERVAL_MS = 10_000;
/**
 * How long a state change waits before it is written to the `workers` table. Between two jobs of a
 * backlog a worker is idle for a few milliseconds (completion, fetch, claim): the claim records it
 * busy again itself, so the `idle` in between costs no transaction. The row is dated from the
 * change, not from the write.
 */
const PRESENCE_SETTLE_MS = 250;

export function defaultWorkerId(role: 'worker' | 'scheduler', settings: Settings): string {
  const prefix = role === 'worker' ? settings.supervisor.workerIdPrefix : settings.supervisor.schedulerIdPrefix;
  return `${prefix}0001`;
}

export async function startChildRuntime(options: ChildRuntimeOptions): Promise<ChildRuntime> {
  const { settings, role } = options;
  const workerId = options.workerId ?? process.env[CHILD_ENV.workerId] ?? defaultWorkerId(role, settings);
  const databaseUrl = settings.database.url;
  if (!databaseUrl) {
    throw new Error(`DATABASE_URL is not set: run 'loreley ${role}' under loreley-supervisor (which starts the embedded database) or point DATABASE_URL at a PostgreSQL server`);
  }
  // The host id, not the machine's name: two supervisors on one machine are two hosts.
  const host = settings.hostId;
  // One list for the log lines and for every stored row (artifacts, commit cards, last_error).
  const secrets = [...urlPasswords(databaseUrl), ...apiKeys(settings)];
  registerSecrets(secrets);
  const log = await createProcessLog({
    settings: settings.logs,
    experiment: settings.experiment,
    role,
    workerId,
    secrets,
    consolePrefix: process.env[CHILD_ENV.supervised] ? `[${workerId}] ` : '',
  });
  const logger = log.logger;

  const drain = new AbortController();
  const stop = new AbortController();
  let drainTimeoutSeconds = settings.supervisor.drainTimeoutSeconds;
  let state: ChildState = 'starting';
  let jobId: string | null = null;
  let moreReady: boolean | undefined;
  let heldJobs: readonly HeldJob[] = [];
  const supervised = typeof process.send === 'function';
  // One LISTEN per host: the supervisor's (it says so in our environment). A worker run by hand
  // LISTENs itself; a scheduler fetches no jobs, so it has nothing to be woken for.
  const wokenBySupervisor = supervised && role === 'worker' && process.env[CHILD_ENV.wake] === '1';
  const wakeListeners: Array<() => void> = [];

  const send = (message: ChildMessage) => {
    if (supervised && process.connected) {
      try {
        process.send!(message);
      } catch {
        // The channel closed between the check and the send; 'disconnect' handles it.
      }
    }
  };

  const requestDrain = (reason: string, timeoutSeconds?: number) => {
    if (timeoutSeconds !== undefined) drainTimeoutSeconds = timeoutSeconds;
    if (drain.signal.aborted) {
      logger.warn({ reason }, 'asked again while draining: stopping now');
      stop.abort();
      return;
    }
    logger.info({ reason, drainTimeoutSeconds }, 'draining');
    drain.abort();
  };

  // Under a supervisor, a terminal's Ctrl+C reaches every process of the group at once; the
  // supervisor's drain message then arrives too and counts as the same request, not a second one.
  let signalledAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (drain.signal.aborted && now - signalledAt < 1000) return;
    signalledAt = now;
    requestDrain(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const onMessage = (message: unknown) => {
    if (!isLoreleyMessage<SupervisorMessage>(message)) return;
    if (message.loreley === 'drain') {
      if (drain.signal.aborted && Date.now() - signalledAt < 1000) return;
      signalledAt = Date.now();
      requestDrain('supervisor', message.timeoutSeconds);
    } else if (message.loreley === 'wake') {
      for (const listener of wakeListeners) listener();
    } else if (message.loreley === 'stop-now') {
      logger.warn('supervisor asked to stop now');
      drain.abort();
      stop.abort();
    }
  };
  process.on('message', onMessage);
  answerMetricsRequests();
  // Without a supervisor there is nobody to restart us or to drain us: leave rather than orphan.
  const onDisconnect = () => {
    logger.warn('supervisor is gone (IPC disconnected): stopping');
    drain.abort();
    stop.abort();
  };
  if (supervised) process.on('disconnect', onDisconnect);
  // node:cluster makes a child exit on the spot when its primary vanishes, before any handler can
  // hand the job in hand back. Marking the worker as one that expects to be disconnected leaves
  // that to our own 'disconnect' handler, which drains and stops now.
  if (cluster.isWorker && cluster.worker) cluster.worker.exitedAfterDisconnect = true;

  // A database that is not there yet (a restart, a server still starting) is waited for with
  // capped backoff rather than exiting: an exit would count as a crash. Anything else (a wrong
  // password, a broken schema) is a real error and ends the process.
  let database: { readonly pool: Pool; readonly boss?: PgBoss; readonly migrated: readonly number[]; close(): Promise<void> };
  const backoff = new Backoff();
  for (;;) {
    try {
      if (role === 'worker') {
        const opened = await openWorkerDatabase({ settings, url: databaseUrl, applicationName: `loreley-${workerId}` });
        if (opened.queueUpdated) logger.info({ reason: opened.queueUpdated }, 'queue installed or updated by pg-boss');
        database = opened;
      } else {
        // Loaded here, not at the top: a worker never loads pg-boss's runtime.
        const { openExperimentDatabase } = await import('./experiment-database.ts');
        const opened = await openExperimentDatabase({
          settings,
          url: databaseUrl,
          applicationName: `loreley-${workerId}`,
          supervise: options.supervise,
          listen: false,
          onQueueError: (error) => logger.warn({ err: error }, 'queue error'),
        });
        database = { ...opened, close: () => opened.close({ graceful: true, timeoutMs: 5000 }) };
      }
      if (backoff.failures > 0) logger.info({ failedTries: backoff.failures }, 'the database is reachable again');
      break;
    } catch (error) {
      if (!isDatabaseUnavailable(error) || drain.signal.aborted) {
        log.flush();
        throw error;
      }
      const delayMs = backoff.next();
      logger.warn({ error: errorMessage(error), retryInMs: delayMs, failedTries: backoff.failures }, 'the database is unavailable: waiting for it');
      // Still alive while waiting: the supervisor must not take the silence for a hang.
      send({ loreley: 'heartbeat', state: 'starting', jobId: null, rssBytes: process.memoryUsage.rss() });
      await sleep(delayMs, undefined, { signal: drain.signal }).catch(() => undefined);
    }
  }
  const { pool, boss } = database;
  if (database.migrated.length > 0) logger.info({ migrations: database.migrated }, 'database migrated');

  // Writes go one after another, so a late 'busy' can never land after the final 'stopped'.
  let presenceChain: Promise<void> = Promise.resolve();
  // What the row says (as far as this process knows), and when the state in memory began.
  let recorded: { state: ChildState | string; jobId: string | null } | undefined;
  let changedAt = performance.now();
  let settleTimer: NodeJS.Timeout | undefined;
  const presenceRow = (override?: { state: ChildState; jobId: null }): WorkerPresence => ({
    experimentId: settings.experiment.uuid, host, workerId, role, pid: process.pid, state: override?.state ?? state, currentJobId: override ? null : jobId,
  });
  const writePresence = (override?: { state: ChildState; jobId: null }, sinceMs = 0): Promise<void> => {
    clearTimeout(settleTimer);
    settleTimer = undefined;
    const row = presenceRow(override);
    presenceChain = presenceChain
      .then(() => upsertWorker(pool, row, sinceMs))
      .then(() => {
        recorded = { state: row.state, jobId: row.currentJobId };
      })
      .catch((error) => logger.debug({ err: error }, 'presence update failed'));
    return presenceChain;
  };
  const settlePresence = () => {
    if (settleTimer) return;
    settleTimer = setTimeout(() => {
      settleTimer = undefined;
      if (recorded?.state !== state || recorded.jobId !== jobId) void writePresence(undefined, performance.now() - changedAt);
    }, PRESENCE_SETTLE_MS);
    settleTimer.unref();
  };

  const heartbeat = () => send({ loreley: 'heartbeat', state, jobId, moreReady, rssBytes: process.memoryUsage.rss(), commandGroups: liveCommandGroups(), heldJobs });
  // The supervisor learns of a command as soon as it starts, so a SIGKILL of this process cannot orphan it.
  const stopWatchingCommands = onCommandGroupsChange(heartbeat);
  const heartbeatTimer = setInterval(heartbeat, settings.supervisor.heartbeatIntervalMs);
  heartbeatTimer.unref();
  const presenceTimer = setInterval(() => void writePresence(), PRESENCE_INTERVAL_MS);
  presenceTimer.unref();

  const runtime: ChildRuntime = {
    settings,
    role,
    workerId,
    host,
    logger,
    log,
    pool,
    boss,
    drainSignal: drain.signal,
    drainTimeoutSeconds: () => drainTimeoutSeconds,
    stopSignal: stop.signal,
    setState(next, nextJobId = null, nextMoreReady) {
      if (next === state && nextJobId === jobId) return;
      state = next;
      jobId = nextJobId;
      moreReady = next === 'busy' ? nextMoreReady : undefined;
      changedAt = performance.now();
      heartbeat();
      settlePresence();
    },
    async presenceToRecord() {
      await presenceChain;
      return presenceRow();
    },
    presenceRecorded(row) {
      recorded = { state: row.state, jobId: row.currentJobId };
    },
    setHeldJobs(jobs) {
      heldJobs = [...jobs];
      heartbeat();
    },
    wokenBySupervisor,
    onWake(listener) {
      wakeListeners.push(listener);
    },
    send,
    async close() {
      clearInterval(heartbeatTimer);
      stopWatchingCommands();
      clearInterval(presenceTimer);
      clearTimeout(settleTimer);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.off('message', onMessage);
      process.off('disconnect', onDisconnect);
      await writePresence({ state: 'stopped', jobId: null });
      await database.close().catch((error) => logger.warn({ err: error }, 'queue did not stop cleanly'));
      log.flush();
    },
  };
  send({ loreley: 'ready', workerId, role, pid: process.pid });
  await writePresence();
  logger.info({ queue: settings.queue.name, experiment: settings.experiment.namespace, supervised }, `${role} online`);
  return runtime;
}
