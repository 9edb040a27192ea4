import { CHILD_ENV, isLoreleyMessage, type ChildMessage, type SupervisorMessage } from '../shared/ipc.ts';
import { loadSettings, SettingsError, type Settings } from '../shared/settings/index.ts';
import { exitOnError, fail } from './common.ts';
import { runChild } from './run-child.ts';

// The supervisor passes Node's compile cache on to us (bin/compile-cache.js); Node has read it
// by now, and the agent and evaluator commands we start must not inherit it.
delete process.env.NODE_COMPILE_CACHE;

/**
 * Entry point of every supervised child. The supervisor says which role and slot in the
 * environment, and sends the settings as its first IPC message: a child never reads `.env`, and
 * its environment carries no credentials.
 */
const role = process.env[CHILD_ENV.role];
if (role !== 'worker' && role !== 'scheduler') fail(`loreley child: ${CHILD_ENV.role} must be worker or scheduler, got ${JSON.stringify(role)}`);
if (typeof process.send !== 'function') fail(`loreley ${role}: this module runs under loreley-supervisor only (use 'loreley ${role}' to run one by hand)`);

// SIGHUP means "reload" to the supervisor, which replaces its children itself. Sent to the whole
// process group (a closed terminal, kill -HUP -<pgid>), it must not kill every child at once.
process.on('SIGHUP', () => undefined);

const SETTINGS_WAIT_MS = 30_000;

function settingsFromSupervisor(): Promise<Settings> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(() => reject(new Error(`no settings from the supervisor within ${SETTINGS_WAIT_MS / 1000} s`))), SETTINGS_WAIT_MS);
    const onMessage = (message: unknown) => {
      if (!isLoreleyMessage<SupervisorMessage>(message) || message.loreley !== 'settings') return;
      done(() => {
        try {
          resolve(loadSettings({ env: message.env, cwd: message.cwd, dotenv: false }));
        } catch (error) {
          reject(error);
        }
      });
    };
    const onDisconnect = () => done(() => reject(new Error('the supervisor went away before sending the settings')));
    const done = (then: () => void) => {
      clearTimeout(timer);
      process.off('message', onMessage);
      process.off('disconnect', onDisconnect);
      then();
    };
    process.on('message', onMessage);
    process.on('disconnect', onDisconnect);
    // Asked for, not pushed at fork time: a message that arrives before anyone listens is lost.
    process.send!({ loreley: 'want-settings' } satisfies ChildMessage);
  });
}

/**
 * A spare worker loads the worker's code now and waits, without settings, database or slot, until
 * the supervisor gives it the slot of a worker that died: the replacement then only has to read its
 * settings and connect. It leaves quietly when the supervisor goes, drains or stops it.
 */
function waitForSlot(): Promise<string> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (!isLoreleyMessage<SupervisorMessage>(message)) return;
      if (message.loreley === 'assign') {
        process.off('message', onMessage);
        resolve(message.workerId);
      } else if (message.loreley === 'drain' || message.loreley === 'stop-now') {
        process.exit(0);
      }
    };
    process.on('message', onMessage);
    process.send!({ loreley: 'spare-ready' } satisfies ChildMessage);
  });
}

if (process.env[CHILD_ENV.spare] === '1') {
  // Nothing to drain yet: a signal (a terminal's Ctrl+C reaches the whole group) just ends it.
  const leave = () => process.exit(0);
  process.on('SIGTERM', leave);
  process.on('SIGINT', leave);
  await import('../worker/worker-process.ts');
  process.env[CHILD_ENV.workerId] = await waitForSlot();
  process.off('SIGTERM', leave);
  process.off('SIGINT', leave);
}

let settings: Settings;
try {
  settings = await settingsFromSupervisor();
} catch (error) {
  if (error instanceof SettingsError) fail(`loreley ${role}: invalid settings from the supervisor:\n${error.problems.map((p) => `  ${p}`).join('\n')}`);
  exitOnError(`loreley ${role}`, error);
}
await runChild({ role, settings, workerId: process.env[CHILD_ENV.workerId] }).catch((error) => exitOnError(`loreley ${role}`, error));
