import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrate } from '../shared/db/migrations/index.ts';
import { createPool } from '../shared/db/pool.ts';
import { embeddedDatabaseDirectory, startEmbeddedDatabase, type EmbeddedDatabase } from '../shared/embedded-database.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../shared/backoff.ts';
import { isDatabaseUnavailable } from '../shared/db-availability.ts';
import { errorMessage } from '../shared/errors.ts';
import { CHILD_ENV } from '../shared/ipc.ts';
import { createProcessLog, urlPasswords, type Logger } from '../shared/logger.ts';
import { apiKeys } from '../shared/secrets.ts';
import { SettingsError, type Env, type Settings } from '../shared/settings/index.ts';
import { SupervisorDatabase } from './database.ts';
import { createNotifier, type ServiceNotifier } from './notify.ts';
import { writeOutcome, writePidFile } from './reload-control.ts';
import { changesNeedingRestart, childProcessEnv, readSettingsSnapshot, type SettingsSnapshot } from './reload-settings.ts';
import { statusLine } from './status.ts';
import { HostPresence } from './host-presence.ts';
import { JobWake } from './job-wake.ts';
import { RunObserver } from './observer.ts';
import { Supervisor } from './supervisor.ts';

/** The supervisor drained cleanly after SIGINT (Ctrl+C): 128 + 2, as a shell reports it. */
const EXIT_INTERRUPTED = 130;

export interface SupervisorRunOptions {
  /** What the settings were read from at start-up; a reload reads `.env` again. */
  readonly snapshot: SettingsSnapshot;
  /** Values from CLI flags: they win over `.env` and the environment, at start-up and on reload. */
  readonly overrides: Env;
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
  const { settings } = options.snapshot;
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
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    signalled ??= signal;
    if (signal === 'SIGINT') interrupted = true;
    if (supervisor) {
      supervisor.stop(signal);
    } else if (!stopRequested) {
      stopRequested = signal;
      logger.info({ signal }, 'stop requested while starting: stopping once start-up is done');
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // A SIGHUP before the children are up has nothing to reload: it must not kill us either.
  const onEarlyHangup = () => logger.info('SIGHUP while starting: nothing to reload yet');
  process.on('SIGHUP', onEarlyHangup);
  const removePidFile = writePidFile(settings);
  const notifier = createNotifier(logger);

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
      removePidFile();
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
        removePidFile();
        throw new Error(`cannot use the database: ${errorMessage(error)}`);
      }
      const delayMs = backoff.next();
      logger.warn({ error: errorMessage(error), retryInMs: delayMs, failedTries: backoff.failures }, 'the database is unavailable: waiting for it');
      await sleep(delayMs);
    }
  }

  let presence: HostPresence | undefined;
  try {
    presence = await HostPresence.claim({ url, settings, logger });
  } catch (error) {
    await stopDatabase();
    log.flush();
    throw error;
  }

  if (stopRequested) {
    await presence.close();
    await stopDatabase();
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    process.off('SIGHUP', onEarlyHangup);
    removePidFile();
    logger.info('supervisor stopped before starting its children');
    log.flush();
    return interrupted ? EXIT_INTERRUPTED : 0;
  }

  const lostJobs = new SupervisorDatabase({ url, settings, logger });
  const observer = new RunObserver({ settings, url, logger, view: () => supervisor?.view() ?? [] });
  try {
    await observer.start();
  } catch (error) {
    await stopDatabase();
    log.flush();
    removePidFile();
    throw error;
  }

  // Children read their settings from this snapshot, sent over IPC; only a reload replaces it.
  let current = options.snapshot;
  const databaseUrl = url;
  supervisor = new Supervisor({
    settings: settings.supervisor,
    logger,
    childModule: CHILD_MODULE,
    childEnv: childProcessEnv({ [CHILD_ENV.wake]: '1', ...(observer.metricsUrl !== undefined ? { [CHILD_ENV.metrics]: '1' } : {}) }),
    childSettings: () => ({ loreley: 'settings', env: { ...current.env, DATABASE_URL: databaseUrl }, cwd: current.settings.cwd }),
    workers: settings.supervisor.workers,
    scheduler: settings.supervisor.scheduler,
    lostJobs,
  });
  const running = supervisor;
  // The host's one LISTEN: it wakes one idle worker per sent job (the workers do not LISTEN).
  const jobWake = settings.supervisor.workers > 0 ? new JobWake({ url, settings, logger, target: running }) : undefined;
  const summary = () => statusLine(running.view());
  // What is up, not each child's state: a child's first heartbeat comes just after its 'ready'.
  const readyLine = () => {
    const up = running.view().filter((slot) => slot.state !== 'errored');
    const workers = up.filter((slot) => slot.role === 'worker').length;
    const schedulers = up.length - workers;
    return `ready: ${workers} worker${workers === 1 ? '' : 's'}${schedulers > 0 ? ' and the scheduler' : ', no scheduler'}`;
  };
  running.on('all-ready', () => {
    notifier.ready(readyLine());
    notifier.startWatchdog(() => running.healthy());
  });

  let reloading = false;
  const onHangup = () => {
    if (reloading) {
      logger.warn('SIGHUP while a reload is running: ignored (it will pick up the .env as read when it started)');
      return;
    }
    reloading = true;
    const use = (next: SettingsSnapshot) => {
      current = next;
    };
    void reload({ supervisor: running, logger, notifier, overrides: options.overrides, current, use, readyLine })
      .catch((error) => logger.error({ err: error }, 'reload failed'))
      .finally(() => {
        reloading = false;
      });
  };
  process.off('SIGHUP', onEarlyHangup);
  process.on('SIGHUP', onHangup);

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
  // A host whose scheduler is absent or a standby never hears `done`: it reads the end of the run
  // from the database.
  if (settings.supervisor.exitWhenDone) {
    presence.watchFinished(
      () => !settings.supervisor.scheduler || supervisor.view().some((slot) => slot.role === 'scheduler' && slot.state === 'standby'),
      () => supervisor.stop('the run is finished (--exit-when-done)'),
    );
  }
  observer.startStatusLine(settings.supervisor.statusIntervalSeconds);
  // systemd's STATUS= line (`systemctl status`) follows the same interval as the log's status line.
  let statusTimer: NodeJS.Timeout | undefined;
  if (settings.supervisor.statusIntervalSeconds > 0) {
    statusTimer = setInterval(() => notifier.status(summary()), settings.supervisor.statusIntervalSeconds * 1000);
    statusTimer.unref();
  }
  supervisor.on('stopping', (reason) => notifier.stopping(`stopping: ${reason}`));

  supervisor.start();
  // A signal that came while the observer started (after the check above, before there was a
  // supervisor to stop) was only recorded: honour it now; the children drain as they report ready.
  if (stopRequested) supervisor.stop(stopRequested);
  jobWake?.start();
  const exitCode = await supervisor.stopped;
  await jobWake?.close();
  const stoppedWith = runStopped !== undefined ? Math.max(exitCode, 1) : exitCode;
  // A drain after Ctrl+C still ends in 130, the shell's "interrupted": the run did not finish.
  const code = stoppedWith === 0 && interrupted ? EXIT_INTERRUPTED : stoppedWith;
  clearInterval(statusTimer);
  await observer.finish(stoppedWith !== 0 ? { kind: 'failed', code: stoppedWith } : finished || !signalled ? { kind: 'finished' } : { kind: 'stopped', signal: signalled });
  await lostJobs.close();
  await presence.close();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  process.off('SIGHUP', onHangup);
  await stopDatabase();
  removePidFile();
  logger.info({ code }, 'supervisor stopped');
  await notifier.flush();
  log.flush();
  return code;
}

interface ReloadContext {
  readonly supervisor: Supervisor;
  readonly logger: Logger;
  readonly notifier: ServiceNotifier;
  readonly overrides: Env;
  readonly current: SettingsSnapshot;
  /** Makes `next` what children get when they ask for their settings. */
  readonly use: (next: SettingsSnapshot) => void;
  readonly readyLine: () => string;
}

/**
 * SIGHUP: reads `.env` again (with the same flags on top) and, when it is valid and changes
 * nothing that needs a restart, replaces the children one at a time with the new code and
 * settings. Invalid settings keep the old ones, and the log says why.
 */
async function reload(context: ReloadContext): Promise<void> {
  const { supervisor, logger, notifier, current } = context;
  const startedAt = new Date().toISOString();
  const finish = (ok: boolean, message: string, replaced: readonly string[] = []) => {
    (ok ? logger.info.bind(logger) : logger.error.bind(logger))({ replaced }, message);
    writeOutcome(current.settings, { pid: process.pid, startedAt, finishedAt: new Date().toISOString(), ok, message, replaced });
    notifier.ready(context.readyLine());
  };
  logger.info('SIGHUP: reloading (reading .env again, then replacing children one at a time)');
  notifier.reloading();
  let next: SettingsSnapshot;
  try {
    next = readSettingsSnapshot(context.overrides, current.settings.cwd);
  } catch (error) {
    const problems = error instanceof SettingsError ? error.problems.join('; ') : errorMessage(error);
    return finish(false, `reload refused, keeping the current settings: invalid settings: ${problems}`);
  }
  const fixed = changesNeedingRestart(current.settings, next.settings);
  if (fixed.length > 0) {
    return finish(false, `reload refused, keeping the current settings: ${fixed.join(', ')} cannot change without a restart`);
  }
  context.use(next);
  supervisor.useSettings(next.settings.supervisor);
  const outcome = await supervisor.reload((step) => {
    logger.info(step);
    notifier.status(step);
  });
  if (outcome.failed) return finish(false, `reload stopped: ${outcome.failed}; children not yet replaced keep running the old code`, outcome.replaced);
  return finish(true, `reload done: ${outcome.replaced.length} children replaced`, outcome.replaced);
}
