import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import { errorMessage, UserError } from '../shared/errors.ts';
import { loadReadOnlySettings, loadSettings, SettingsError, type Env, type ReadOnlySettings, type Settings } from '../shared/settings/index.ts';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Prints one line per problem and exits 1: a user never sees a stack trace for bad input. */
export function fail(message: string, code = 1): never {
  process.stderr.write(`${message.trimEnd()}\n`);
  process.exit(code);
}

export function settingsOrExit(overrides: Env = {}, command = 'loreley'): Settings {
  const settings = loadOrExit(() => loadSettings({ overrides }), command);
  // Once per run: a supervised child (it has an IPC channel) leaves them to its supervisor.
  if (process.send === undefined) for (const notice of settings.notices) process.stderr.write(`${command}: ${notice}\n`);
  return settings;
}

/** For read-only commands (status, logs, report): the experiment and its database, not the agent or evaluator. */
export function readOnlySettingsOrExit(overrides: Env = {}, command = 'loreley'): ReadOnlySettings {
  return loadOrExit(() => loadReadOnlySettings({ overrides }), command);
}

function loadOrExit<T>(load: () => T, command: string): T {
  try {
    return load();
  } catch (error) {
    if (error instanceof SettingsError) {
      fail(`${command}: invalid settings (environment or .env):\n${error.problems.map((p) => `  ${p}`).join('\n')}`);
    }
    fail(`${command}: ${errorMessage(error)}`);
  }
}

/** Turns an error that reached the top of a command into one line and an exit code. */
export function exitOnError(command: string, error: unknown): never {
  if (error instanceof SettingsError) fail(`${command}: invalid settings:\n${error.problems.map((p) => `  ${p}`).join('\n')}`);
  if (error instanceof UserError) fail(`${command}: ${error.message}`);
  const debug = process.env.LOG_LEVEL?.toLowerCase() === 'debug' || process.env.LOG_LEVEL?.toLowerCase() === 'trace';
  fail(`${command}: ${errorMessage(error)}${debug && error instanceof Error && error.stack ? `\n${error.stack}` : ''}`);
}

/** Flag values that override settings, keyed by environment variable; unset flags are left out. */
export function overridesFrom(pairs: Record<string, string | number | boolean | undefined>): Env {
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(pairs)) if (value !== undefined) result[key] = String(value);
  return result;
}

/** What every Loreley command line shares: strict flags, --version, --help, one-line usage errors. */
export function withCommonBehaviour<T>(y: Argv<T>, name: string): Argv<T> {
  return y
    .strict()
    .version(VERSION)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((message, error) => {
      if (error) exitOnError(name, error);
      // yargs writes some messages (an invalid choice) over several lines; a user gets one.
      const oneLine = String(message).split('\n').map((part) => part.trim()).filter(Boolean).join(' ');
      process.stderr.write(`${name}: ${oneLine}\nRun '${name} --help' for usage.\n`);
      process.exit(1);
    });
}
