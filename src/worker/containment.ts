import os from 'node:os';
import path from 'node:path';
import { protectClone } from '../shared/git.ts';
import type { Logger } from '../shared/logger.ts';
import { launcherUnavailable } from '../shared/launcher.ts';
import { detectContainment, launcherFor, type Containment } from '../shared/sandbox.ts';
import type { Settings } from '../shared/settings/index.ts';
import { EvaluatorGuard, useEvaluatorGuard } from './evaluator.ts';
import { setCommandPolicy } from './job-command.ts';

/** Credential files and directories under HOME that no candidate needs to read. */
const HOME_CREDENTIALS = ['.ssh', '.aws', '.azure', '.config/gcloud', '.kube', '.docker', '.netrc', '.git-credentials', '.pgpass', '.gnupg', '.npmrc'];

/**
 * What a worker decides once at start-up about the commands it will run: how they are contained
 * (src/shared/sandbox.ts), what the sandbox lets them write and hides from them, and the
 * evaluator's files as they are now. Warnings name, in one line each, what this machine cannot
 * give; a sandbox asked for explicitly but unavailable throws a ConfigurationError (exit 78).
 */
export function prepareCommands(settings: Settings, logger: Logger): { containment: Containment; guard: EvaluatorGuard } {
  const { sandbox, evaluator } = settings.worker;
  const containment = detectContainment(sandbox);
  for (const warning of containment.warnings) logger.warn(`commands: ${warning}`);
  let launcher = settings.worker.commandLauncher ? launcherFor(containment) : undefined;
  const noLauncher = launcher ? launcherUnavailable() : undefined;
  if (noLauncher) {
    logger.warn(`commands: no command launcher (${noLauncher}): each command is started by a fork of the worker and an unshare exec, which costs more CPU`);
    launcher = undefined;
  }
  // Loreley owns the base clone's git config from now on (see protectClone).
  protectClone(settings.worker.git.baseClone, settings.repository.remoteUrl);
  const guard = EvaluatorGuard.forSettings(evaluator);
  useEvaluatorGuard(guard);
  setCommandPolicy({
    containment,
    launcher,
    network: sandbox.network,
    writable: sandbox.writable,
    readOnly: guard.files,
    // Readable by anyone on the machine but not for candidate code: the experiment's settings
    // (they may hold DATABASE_URL and API keys) and the embedded database's files.
    // Likewise the operator's credentials under HOME (the rest of HOME stays readable: tools need it).
    hidden: [path.join(settings.cwd, '.env'), path.join(settings.dataDir, 'postgres'), ...HOME_CREDENTIALS.map((entry) => path.join(os.homedir(), entry))],
  });
  logger.info(
    { mechanism: containment.mechanism, sandboxed: containment.sandboxed, network: containment.sandboxed ? sandbox.network : true, launcher: launcher !== undefined, evaluatorFiles: guard.files },
    'commands contained',
  );
  return { containment, guard };
}
