import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrate } from '../shared/db/migrations/index.ts';
import { createPool } from '../shared/db/pool.ts';
import { embeddedDatabaseDirectory, startEmbeddedDatabase, type EmbeddedDatabase } from '../shared/embedded-database.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../shared/backoff.ts';
import { isDatabaseUnavailable } from '../shared/db-availability.ts';
import { errorMessage } from '../shared/errors.ts';
import { createProcessLog, urlPasswords } from '../shared/logger.ts';
import { apiKeys } from '../shared/secrets.ts';
import type { Settings } from '../shared/settings/index.ts';
import { SupervisorDatabase } from './database.ts';
import { RunObserver } from './observer.ts';
import { Supervisor } from './supervisor.ts';

export interface SupervisorRunOptions {
  readonly settings: Settings;
  /** Environment variables from CLI flags, handed to every child so they read the same settings. */
  readonly childOverrides: Record<string, string>;
}

// Compiled (dist/*.js) or source (src/*.ts): the child runs the same kind as the supervisor.
const CHILD_MODULE = fileURLToPath(new URL(`../cli/child${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url));

async function checkDatabase(url: string, settings: Settings): Promise<void> {
  const pool = createPool({ url, settings: settings.database, applicationName: 'loreley-supervisor', max: 1 });
  try {
    await migrate(pool, settings.database.schema);
  } finally {
    await pool.end().catch(() => undefined);
  }
}

/**
 * The supervisor process: starts the embedded database when there is no DATABASE_URL, forks the
 * children, prints their status, and on SIGTERM/SIGINT drains them and stops the database.
 * Resolves with the process exit code.
 */
export async function runSupervisor(options: SupervisorRunOptions): Promise<number> {
  const { settings } = options;
  const log = await createProcessLog({
    settings: settings.logs,
    experiment: settings.experiment,
    role: 'supervisor',
    workerId: 'supervisor',
    secrets: [...urlPasswords(settings.database.url), ...apiKeys(settings)],
    consolePrefix: '[supervisor] ',
  });
  const logger = log.logger;

  // Installed before anything starts: a signal during start-up must not kill us with the
  // database half up. It is remembered and honoured once there is something to stop.
  let supervisor: Supervisor | undefined;
  let stopRequested: NodeJS.Signals | undefined;
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    signalled ??= signal;
    if (supervisor) {
      supervisor.stop(signal);
    } else if (!stopRequested) {
      stopRequested = signal;
      logger.info({ signal }, 'stop requested while starting: stopping once start-up is done');
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let database: EmbeddedDatabase | undefined;
  let url = settings.database.url;
  if (!url) {
    const directory = embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace);
    logger.info({ directory }, 'no DATABASE_URL: starting the embedded PostgreSQL');
    try {
      // Every child holds two small pools (Loreley's and pg-boss's) plus a LISTEN connection.
      const perChild = 2 * settings.database.poolMax + 2;
      const children = settings.supervisor.workers + (settings.supervisor.scheduler ? 1 : 0);
      const maxConnections = Math.max(100, (children + 2) * perChild + 20);
      database = await startEmbeddedDatabase({ directory, maxConnections, onLog: (m) => logger.debug({ postgres: m.trim() }, 'embedded database') });
    } catch (error) {
      logger.error({ error: errorMessage(error) }, 'embedded database failed to start');
      log.flush();
      throw error;
    }
    url = database.url;
    logger.info({ port: database.port }, 'embedded PostgreSQL is up');
  }
  const stopDatabase = async () => {
    if (!database) return;
    logger.info('stopping the embedded PostgreSQL');
    await database.stop().catch((error) => logger.error({ err: error }, 'embedded database did not stop cleanly'));
  };

  // A server that is not reachable yet (restarting, still starting) is waited for with capped
  // backoff, as the children do; a real error (a wrong password, a broken schema) stops here.
  const backoff = new Backoff();
  for (;;) {
    try {
      await checkDatabase(url, settings);
      if (backoff.failures > 0) logger.info({ failedTries: backoff.failures }, 'the database is reachable');
      break;
    } catch (error) {
      // Asked to stop while waiting: the clean stop below, not an error.
      if (stopRequested) break;
      if (!isDatabaseUnavailable(error)) {
        await stopDatabase();
        log.flush();
        throw new Error(`cannot use the database: ${errorMessage(error)}`);
      }
      const delayMs = backoff.next();
      logger.warn({ error: errorMessage(error), retryInMs: delayMs, failedTries: backoff.failures }, 'the database is unavailable: waiting for it');
      await sleep(delayMs);
    }
  }

  if (stopRequested) {
    await stopDatabase();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    logger.info('supervisor stopped before starting its children');
    log.flush();
    return 0;
  }

  const lostJobs = new SupervisorDatabase({ url, settings, logger });
  const observer = new RunObserver({ settings, url, logger, view: () => supervisor?.view() ?? [] });
  try {
    await observer.start();
  } catch (error) {
    await stopDatabase();
    log.flush();
    throw error;
  }

  supervisor = new Supervisor({
    settings: settings.supervisor,
    logger,
    childModule: CHILD_MODULE,
    childEnv: { ...options.childOverrides, DATABASE_URL: url },
    workers: settings.supervisor.workers,
    scheduler: settings.supervisor.scheduler,
    lostJobs,
  });

  let finished = false;
  // A run the scheduler stopped (the baseline failed, the circuit breaker tripped, every job failed)
  // ends the supervisor with a non-zero exit, --exit-when-done or not: nothing more will happen.
  let runStopped: string | undefined;
  supervisor.on('done', (summary) => {
    finished = true;
    const stopped = (summary as { stopped?: { reason?: unknown } | null }).stopped;
    if (typeof stopped?.reason === 'string') {
      runStopped = stopped.reason;
      logger.fatal({ summary }, `the run stopped: ${stopped.reason}`);
      supervisor.stop('the run stopped');
      return;
    }
    if (settings.supervisor.exitWhenDone) supervisor.stop('the run is finished (--exit-when-done)');
    else logger.info({ summary }, 'the run is finished; the supervisor keeps running (use --exit-when-done to stop)');
  });
  observer.startStatusLine(settings.supervisor.statusIntervalSeconds);

  supervisor.start();
  const exitCode = await supervisor.stopped;
  const code = runStopped !== undefined ? Math.max(exitCode, 1) : exitCode;
  await observer.finish(code !== 0 ? { kind: 'failed', code } : finished || !signalled ? { kind: 'finished' } : { kind: 'stopped', signal: signalled });
  await lostJobs.close();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  await stopDatabase();
  logger.info({ code }, 'supervisor stopped');
  log.flush();
  return code;
}
