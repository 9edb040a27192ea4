import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { exitOnError, overridesFrom, readOnlySettingsOrExit, settingsOrExit, withCommonBehaviour } from './common.ts';
import { EXAMPLES, initExample } from './init-example.ts';
import { runChild } from './run-child.ts';
import { collectStatus, formatStatus, withStatusDatabase } from './status.ts';

/** How to start the supervisor from anywhere with this installation's Node. */
function supervisorCommand(): string {
  return `${process.execPath} ${fileURLToPath(new URL('../../bin/loreley-supervisor.js', import.meta.url))}`;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];

await withCommonBehaviour(yargs(hideBin(process.argv)), 'loreley')
  .scriptName('loreley')
  .usage('$0 <command> [options]\n\nLoreley evolves a git repository with LLM-driven mutations and a MAP-Elites archive.')
  .option('log-level', { type: 'string', choices: LOG_LEVELS, describe: 'Overrides LOG_LEVEL' })
  .command(
    'worker',
    'Run one evolution worker in the foreground (what each supervised worker child runs)',
    (y) => y.option('worker-id', { type: 'string', describe: 'Stable id for logs and the workers table (default: LORELEY_WORKER_ID or worker0001)' }),
    async (argv) => {
      const settings = settingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley worker');
      await runChild({ role: 'worker', settings, workerId: argv.workerId }).catch((error) => exitOnError('loreley worker', error));
    },
  )
  .command(
    'scheduler',
    'Run the scheduler: ingest, dispatch, reconcile and schedule every SCHEDULER_POLL_INTERVAL_SECONDS',
    (y) =>
      y
        .option('once', { type: 'boolean', default: false, describe: 'Run one tick and exit' })
        .option('max-jobs', { type: 'number', describe: 'Job budget (overrides SCHEDULER_MAX_TOTAL_JOBS)' })
        .option('worker-id', { type: 'string', describe: 'Stable id (default: scheduler0001)' }),
    async (argv) => {
      const settings = settingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel, SCHEDULER_MAX_TOTAL_JOBS: argv.maxJobs }), 'loreley scheduler');
      await runChild({ role: 'scheduler', settings, workerId: argv.workerId, once: argv.once }).catch((error) => exitOnError('loreley scheduler', error));
    },
  )
  .command(
    'status',
    'Show the experiment: jobs by status, the best commit, the processes',
    (y) => y.option('json', { type: 'boolean', default: false, describe: 'Print JSON' }),
    async (argv) => {
      const settings = readOnlySettingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley status');
      try {
        const status = await withStatusDatabase(settings, (url, source) => collectStatus(settings, url, source));
        process.stdout.write(argv.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      } catch (error) {
        exitOnError('loreley status', error);
      }
    },
  )
  .command(
    'init <dir>',
    'Create a ready-to-run experiment from a bundled example',
    (y) =>
      y
        .positional('dir', { type: 'string', demandOption: true, describe: 'Directory to create (must be empty)' })
        .option('example', { type: 'string', choices: EXAMPLES, default: 'circle-packing', describe: 'Which example' })
        .option('max-jobs', { type: 'number', default: 24, describe: 'Job budget written to the .env' })
        .option('force', { type: 'boolean', default: false, describe: 'Write into a non-empty directory' }),
    (argv) => {
      try {
        const { directory } = initExample({ directory: argv.dir, example: argv.example as (typeof EXAMPLES)[number], maxJobs: argv.maxJobs, force: argv.force });
        process.stdout.write(
          `Created the ${argv.example} experiment in ${directory}\n\nRun it:\n  cd ${directory}\n  ${supervisorCommand()} --workers 4 --exit-when-done\n`,
        );
      } catch (error) {
        exitOnError('loreley init', error);
      }
    },
  )
  .demandCommand(1, 'Name a command: loreley --help lists them.')
  .parseAsync();
