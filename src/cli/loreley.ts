import { realpathSync } from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import { UserError } from '../shared/errors.ts';
import type { LogLevel } from '../shared/settings/index.ts';
import { hideBin } from 'yargs/helpers';
import { exitOnError, overridesFrom, readOnlySettingsOrExit, settingsOrExit, withCommonBehaviour } from './common.ts';
import { EXAMPLES, initExample, SUPERVISOR_LAUNCHER } from './init-example.ts';
import { LOG_ROLES, parseSince, runLogs } from './logs.ts';

// Each command's code is imported when that command runs (init-example.ts and logs.ts load
// nothing heavy at the top): `loreley status` does not load the worker, the report, pino-pretty
// or the database rebuild.

/** Whether `loreley-supervisor` on PATH is this installation's (after npm link or npm install -g). */
function supervisorOnPath(): boolean {
  for (const directory of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(directory, 'loreley-supervisor');
    try {
      if (directory && realpathSync(candidate) === realpathSync(SUPERVISOR_LAUNCHER)) return true;
    } catch {
      // Not there.
    }
  }
  return false;
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
      const { runChild } = await import('./run-child.ts');
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
      const { runChild } = await import('./run-child.ts');
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
        const { collectStatus, formatStatus, withStatusDatabase } = await import('./status.ts');
        const status = await withStatusDatabase(settings, (url, source) => collectStatus(settings, url, source));
        process.stdout.write(argv.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
      } catch (error) {
        exitOnError('loreley status', error);
      }
    },
  )
  .command(
    'logs [ids..]',
    'Show the experiment\'s logs, every process merged in time order (like pm2 logs); -f to follow',
    (y) =>
      y
        .positional('ids', { type: 'string', array: true, describe: 'Process ids (worker0001, scheduler0001, supervisor); none: every process' })
        .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'Keep printing new lines, across rotations and new processes' })
        .option('level', { type: 'string', choices: LOG_LEVELS, describe: 'Only this level and above' })
        .option('job', { type: 'string', describe: 'Only lines of this job (its id or first characters)' })
        .option('since', { type: 'string', describe: 'Only lines since a time (2026-11-23T19:30:00Z) or a duration ago (10m, 2h, 1d)' })
        .option('role', { type: 'string', choices: LOG_ROLES, describe: 'Only processes of this role' })
        .option('lines', { alias: 'n', type: 'number', describe: 'Only the last N lines already written (default all; 10 with --follow)' })
        .option('json', { type: 'boolean', default: false, describe: 'Print the raw JSONL lines' }),
    async (argv) => {
      const settings = readOnlySettingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley logs');
      try {
        if (argv.lines !== undefined && (!Number.isInteger(argv.lines) || argv.lines < 0)) throw new UserError('--lines must be a whole number >= 0');
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        process.once('SIGTERM', () => stop.abort());
        // `loreley logs | head`: the reader went away; that is the end, not an error.
        process.stdout.on('error', (error: NodeJS.ErrnoException) => (error.code === 'EPIPE' ? process.exit(0) : exitOnError('loreley logs', error)));
        await runLogs(settings, {
          ids: (argv.ids ?? []).map(String),
          follow: argv.follow,
          level: argv.level as LogLevel | undefined,
          job: argv.job,
          since: argv.since !== undefined ? parseSince(argv.since) : undefined,
          role: argv.role,
          json: argv.json,
          lines: argv.lines,
          colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
          signal: stop.signal,
        });
      } catch (error) {
        exitOnError('loreley logs', error);
      }
    },
  )
  .command(
    'report',
    'Write one self-contained HTML report of the run: fitness over time, the archive, the best lineage, failures, cost',
    (y) =>
      y
        .option('out', { alias: 'o', type: 'string', describe: 'Where to write it (default <LOGS_BASE_DIR>/logs/<namespace>/report.html)' })
        .option('open', { type: 'boolean', default: false, describe: 'Open it in the default browser' })
        .option('dims', { type: 'string', describe: 'The two descriptor dimensions the archive heatmap shows (default 0,1)' }),
    async (argv) => {
      const settings = readOnlySettingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley report');
      try {
        const { parseDims, runReport } = await import('./report/index.ts');
        const file = await runReport(settings, { out: argv.out, open: argv.open, dims: argv.dims !== undefined ? parseDims(argv.dims) : undefined });
        process.stdout.write(`Report written to ${file}\n`);
      } catch (error) {
        exitOnError('loreley report', error);
      }
    },
  )
  .command(
    'doctor',
    'Check that this experiment can run here: settings, database, repository, programs, LLM endpoint, disk, logs',
    (y) => y,
    async (argv) => {
      const { doctor, formatResults } = await import('./doctor.ts');
      const results = await doctor(overridesFrom({ LOG_LEVEL: argv.logLevel }));
      process.stdout.write(formatResults(results));
      const failed = results.filter((result) => !result.ok).length;
      if (failed > 0) process.stdout.write(`${failed} check${failed === 1 ? '' : 's'} failed\n`);
      process.exit(failed === 0 ? 0 : 1);
    },
  )
  .command(
    'reload',
    'Rolling reload of the running supervisor (as SIGHUP): new code and .env, one child at a time, no job lost',
    (y) =>
      y
        .option('wait', { type: 'boolean', default: true, describe: 'Wait for the reload to finish and print how it went (--no-wait: just signal)' })
        .option('timeout', { type: 'number', default: 600, describe: 'Seconds to wait' }),
    async (argv) => {
      const settings = settingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley reload');
      try {
        const { reloadRunningSupervisor } = await import('./reload.ts');
        process.exit(await reloadRunningSupervisor(settings, { wait: argv.wait, timeoutSeconds: argv.timeout }));
      } catch (error) {
        exitOnError('loreley reload', error);
      }
    },
  )
  .command(
    'rebuild',
    "Restore the experiment into an empty database from its remote's git notes (refs/notes/loreley)",
    (y) =>
      y
        .option('force', { type: 'boolean', default: false, describe: 'Replace what the database holds of the experiment (asks first)' })
        .option('yes', { type: 'boolean', default: false, describe: 'Do not ask (for scripts)' }),
    async (argv) => {
      const settings = settingsOrExit(overridesFrom({ LOG_LEVEL: argv.logLevel }), 'loreley rebuild');
      try {
        const { runRebuild } = await import('./rebuild.ts');
        await runRebuild(settings, { force: argv.force, yes: argv.yes });
      } catch (error) {
        exitOnError('loreley rebuild', error);
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
        const hint = supervisorOnPath()
          ? ''
          : `\n(loreley-supervisor is not on your PATH: run 'npm link' in ${path.dirname(path.dirname(SUPERVISOR_LAUNCHER))}, or use ${SUPERVISOR_LAUNCHER})\n`;
        process.stdout.write(
          `Created the ${argv.example} experiment in ${directory}\n\nRun it:\n  cd ${directory}\n  loreley-supervisor --workers 4 --exit-when-done\n` +
            `${hint}\nUnder pm2: pm2 start ecosystem.config.cjs    Under systemd: see loreley.service\n`,
        );
      } catch (error) {
        exitOnError('loreley init', error);
      }
    },
  )
  .demandCommand(1, 'Name a command: loreley --help lists them.')
  .parseAsync();
