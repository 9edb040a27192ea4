import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { EXIT_CONFIG } from '../shared/ipc.ts';
import { SettingsError } from '../shared/settings/index.ts';
import { readSettingsSnapshot, type SettingsSnapshot } from '../supervisor/reload-settings.ts';
import { runSupervisor } from '../supervisor/main.ts';
import { exitOnError, fail, overridesFrom, withCommonBehaviour } from './common.ts';
import { doctor, formatResults, preflight } from './doctor.ts';

const argv = await withCommonBehaviour(yargs(hideBin(process.argv)), 'loreley-supervisor')
  .scriptName('loreley-supervisor')
  .usage(
    '$0 [options]\n\nRuns a Loreley experiment: N worker processes and one scheduler, restarted when they crash,\n' +
      'drained on SIGTERM/SIGINT, replaced one at a time on SIGHUP (loreley reload). Settings come from the\n' +
      'environment and ./.env; flags override them. Without DATABASE_URL an embedded PostgreSQL is started\n' +
      'under LORELEY_DATA_DIR.\n\nExit codes: 0 stopped cleanly, 1 failed (worth a restart), 78 configuration error (fix it first), 130 interrupted twice.',
  )
  .option('workers', { alias: 'w', type: 'number', describe: 'Worker processes (SUPERVISOR_WORKERS, default 2)' })
  .option('scheduler', { type: 'boolean', describe: 'Run the scheduler child; --no-scheduler for extra hosts (SUPERVISOR_SCHEDULER)' })
  .option('worker-id-prefix', { type: 'string', describe: 'Prefix of worker ids, e.g. per host (SUPERVISOR_WORKER_ID_PREFIX, default worker)' })
  .option('host-id', { type: 'string', describe: "This host's name among the experiment's hosts (LORELEY_HOST_ID, default the hostname)" })
  .option('drain-timeout', { type: 'number', describe: 'Seconds a draining worker may finish its job (SUPERVISOR_DRAIN_TIMEOUT_SECONDS)' })
  .option('exit-when-done', { type: 'boolean', describe: 'Drain and exit 0 when the scheduler reports the run finished' })
  .option('max-jobs', { type: 'number', describe: 'Job budget (SCHEDULER_MAX_TOTAL_JOBS)' })
  .option('metrics-port', { type: 'number', describe: 'Serve Prometheus metrics on this port, loopback only unless SUPERVISOR_METRICS_HOST (SUPERVISOR_METRICS_PORT)' })
  .option('log-level', { type: 'string', choices: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'], describe: 'LOG_LEVEL' })
  .option('check', { type: 'boolean', default: false, describe: 'Run the pre-flight checks (as loreley doctor) and exit: 0 when all pass' })
  .check((args) => {
    // yargs turns "abc" into NaN: every number flag is checked here and named in the error.
    const workers = args.workers as number | undefined;
    const maxJobs = args.maxJobs as number | undefined;
    const drainTimeout = args.drainTimeout as number | undefined;
    if (workers !== undefined && (!Number.isInteger(workers) || workers < 0 || workers > 256)) throw new Error('--workers: must be a whole number from 0 to 256');
    if (maxJobs !== undefined && (!Number.isInteger(maxJobs) || maxJobs < 0)) throw new Error('--max-jobs: must be a whole number >= 0');
    if (drainTimeout !== undefined && !(drainTimeout >= 0)) throw new Error('--drain-timeout: must be a number of seconds >= 0');
    const metricsPort = args.metricsPort as number | undefined;
    if (metricsPort !== undefined && (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535)) throw new Error('--metrics-port: must be a port number (0-65535)');
    return true;
  })
  .parseAsync();

const overrides = overridesFrom({
  SUPERVISOR_WORKERS: argv.workers,
  SUPERVISOR_SCHEDULER: argv.scheduler,
  SUPERVISOR_WORKER_ID_PREFIX: argv.workerIdPrefix,
  LORELEY_HOST_ID: argv.hostId,
  SUPERVISOR_DRAIN_TIMEOUT_SECONDS: argv.drainTimeout,
  SUPERVISOR_EXIT_WHEN_DONE: argv.exitWhenDone,
  SCHEDULER_MAX_TOTAL_JOBS: argv.maxJobs,
  SUPERVISOR_METRICS_PORT: argv.metricsPort,
  LOG_LEVEL: argv.logLevel,
});

if (argv.check) {
  const results = await doctor(overrides);
  process.stdout.write(formatResults(results));
  process.exit(results.every((result) => result.ok) ? 0 : 1);
}

let snapshot: SettingsSnapshot;
try {
  snapshot = readSettingsSnapshot(overrides);
} catch (error) {
  if (error instanceof SettingsError) {
    fail(`loreley-supervisor: invalid settings (environment or .env):\n${error.problems.map((p) => `  ${p}`).join('\n')}`);
  }
  exitOnError('loreley-supervisor', error);
}
const { settings } = snapshot;
// The scheduler would enqueue jobs that no worker can ever take: no other host can reach an
// embedded database. (With --no-scheduler too, it only keeps the database up, for inspection.)
if (settings.supervisor.workers === 0 && settings.supervisor.scheduler && !settings.database.url) {
  const via = argv.workers !== undefined ? '--workers' : 'SUPERVISOR_WORKERS';
  fail(`loreley-supervisor: ${via}: must be at least 1 with the embedded database (no DATABASE_URL): the run could never finish, as no other host can reach that database; set DATABASE_URL to a shared server to run workers elsewhere`, EXIT_CONFIG);
}
// Cheap checks before anything starts: a missing repository, branch or program is a
// configuration error (exit 78, which systemd's RestartPreventExitStatus and pm2 leave stopped).
const failed = settings.supervisor.preflight ? (await preflight(settings)).filter((result) => !result.ok) : [];
if (failed.length > 0) fail(failed.map((result) => `loreley-supervisor: ${result.name}: ${result.detail}`).join('\n'), EXIT_CONFIG);

try {
  const code = await runSupervisor({ snapshot, overrides });
  process.exit(code);
} catch (error) {
  exitOnError('loreley-supervisor', error);
}
