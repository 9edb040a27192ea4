import { setTimeout as sleep } from 'node:timers/promises';
import { UserError } from '../shared/errors.ts';
import type { Settings } from '../shared/settings/index.ts';
import { readOutcome, runningSupervisor } from '../supervisor/reload-control.ts';

/**
 * `loreley reload`: finds the supervisor running this experiment from this directory (its pid
 * file), sends it SIGHUP, and waits for the outcome it writes when the reload is over. Exit 0 when
 * every child was replaced, 1 when the reload was refused or stopped (the old children run on).
 */
export async function reloadRunningSupervisor(settings: Settings, options: { wait: boolean; timeoutSeconds: number }): Promise<number> {
  const pid = runningSupervisor(settings);
  const before = readOutcome(settings)?.finishedAt;
  const sentAt = Date.now();
  process.kill(pid, 'SIGHUP');
  process.stdout.write(`sent SIGHUP to the supervisor (pid ${pid}): it replaces its children one at a time\n`);
  if (!options.wait) return 0;
  const deadline = sentAt + options.timeoutSeconds * 1000;
  while (Date.now() < deadline) {
    const outcome = readOutcome(settings);
    if (outcome && outcome.pid === pid && outcome.finishedAt !== before && Date.parse(outcome.startedAt) >= sentAt - 1000) {
      process.stdout.write(`${outcome.message}${outcome.replaced.length > 0 ? ` (${outcome.replaced.join(', ')})` : ''}\n`);
      return outcome.ok ? 0 : 1;
    }
    await sleep(200);
  }
  throw new UserError(`the reload did not finish within ${options.timeoutSeconds} s (it may still be running: see the supervisor's log)`);
}
