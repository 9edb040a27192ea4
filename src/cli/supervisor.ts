import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { runSupervisor } from '../supervisor/main.ts';
import { exitOnError, overridesFrom, settingsOrExit, withCommonBehaviour } from './common.ts';

const argv = await withCommonBehaviour(yargs(hideBin(process.argv)), 'loreley-supervisor')
  .scriptName('loreley-supervisor')
  .usage(
    '$0 [options]\n\nRuns a Loreley experiment: N worker processes and one scheduler, restarted when they crash,\n' +
      'drained on SIGTERM/SIGINT. Settings come from the environment and ./.env; flags override them.\n' +
      'Without DATABASE_URL an embedded PostgreSQL is started under LORELEY_DATA_DIR.',
  )
  .option('workers', { alias: 'w', type: 'number', describe: 'Worker processes (SUPERVISOR_WORKERS, default 2)' })
  .option('scheduler', { type: 'boolean', describe: 'Run the scheduler child; --no-scheduler for extra hosts (SUPERVISOR_SCHEDULER)' })
  .option('worker-id-prefix', { type: 'string', describe: 'Prefix of worker ids, e.g. per host (SUPERVISOR_WORKER_ID_PREFIX, default worker)' })
  .option('drain-timeout', { type: 'number', describe: 'Seconds a draining worker may finish its job (SUPERVISOR_DRAIN_TIMEOUT_SECONDS)' })
  .option('exit-when-done', { type: 'boolean', describe: 'Drain and exit 0 when the scheduler reports the run finished' })
  .option('max-jobs', { type: 'number', describe: 'Job budget (SCHEDULER_MAX_TOTAL_JOBS)' })
  .option('metrics-port', { type: 'number', describe: 'Serve Prometheus metrics on this port, loopback only unless SUPERVISOR_METRICS_HOST (SUPERVISOR_METRICS_PORT)' })
  .option('log-level', { type: 'string', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'], describe: 'LOG_LEVEL' })
  .check((args) => {
    if (args.workers !== undefined && (!Number.isInteger(args.workers) || args.workers < 0)) throw new Error('--workers must be a whole number >= 0');
    const maxJobs = args.maxJobs as number | undefined;
    const drainTimeout = args.drainTimeout as number | undefined;
    if (maxJobs !== undefined && (!Number.isInteger(maxJobs) || maxJobs < 0)) throw new Error('--max-jobs must be a whole number >= 0');
    if (drainTimeout !== undefined && !(drainTimeout >= 0)) throw new Error('--drain-timeout must be a number of seconds >= 0');
    const metricsPort = args.metricsPort as number | undefined;
    if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)) throw new Error('--metrics-port must be a port number (0-65535)');
    return true;
  })
  .parseAsync();

const overrides = overridesFrom({
  SUPERVISOR_WORKERS: argv.workers,
  SUPERVISOR_SCHEDULER: argv.scheduler,
  SUPERVISOR_WORKER_ID_PREFIX: argv.workerIdPrefix,
  SUPERVISOR_DRAIN_TIMEOUT_SECONDS: argv.drainTimeout,
  SUPERVISOR_EXIT_WHEN_DONE: argv.exitWhenDone,
  SCHEDULER_MAX_TOTAL_JOBS: argv.maxJobs,
  SUPERVISOR_METRICS_PORT: argv.metricsPort,
  LOG_LEVEL: argv.logLevel,
});
const settings = settingsOrExit(overrides, 'loreley-supervisor');
try {
  const code = await runSupervisor({ settings, childOverrides: overrides as Record<string, string> });
  process.exit(code);
} catch (error) {
  exitOnError('loreley-supervisor', error);
}
