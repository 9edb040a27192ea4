import { ConfigurationError, errorMessage, UserError } from '../shared/errors.ts';
import { EXIT_CONFIG } from '../shared/ipc.ts';
import { startChildRuntime, type ChildRuntime } from '../shared/runtime.ts';
import type { Settings } from '../shared/settings/index.ts';
import { killAllCommands } from '../shared/subprocess.ts';

export interface RunChildOptions {
  readonly role: 'worker' | 'scheduler';
  readonly settings: Settings;
  readonly workerId?: string;
  readonly once?: boolean;
}

/**
 * Runs a worker or scheduler to completion in this process and exits: 0 after a drain, 1 on a
 * start-up failure or a crash. Used by `loreley worker|scheduler` and by supervised children.
 */
export async function runChild(options: RunChildOptions): Promise<never> {
  let runtime: ChildRuntime | undefined;
  const crash = (error: unknown) => {
    killAllCommands();
    if (runtime) {
      runtime.logger.fatal({ err: error }, 'crashed');
      runtime.log.flush();
    } else {
      process.stderr.write(`loreley ${options.role}: ${errorMessage(error)}\n`);
    }
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  try {
    runtime = await startChildRuntime({ settings: options.settings, role: options.role, workerId: options.workerId, supervise: options.role === 'scheduler' });
  } catch (error) {
    process.stderr.write(`loreley ${options.role}: ${errorMessage(error)}\n`);
    process.exit(1);
  }
  try {
    // Each role loads only its own code: a worker never pays for the archive's libraries.
    if (options.role === 'worker') {
      const { runWorker } = await import('../worker/worker-process.ts');
      await runWorker(runtime);
    } else {
      const { runSchedulerProcess } = await import('../scheduler/main.ts');
      await runSchedulerProcess(runtime, { once: options.once ?? false });
    }
  } catch (error) {
    if (error instanceof ConfigurationError || error instanceof UserError) {
      runtime.logger.fatal({ error: error.message }, error instanceof ConfigurationError ? 'cannot run with these settings' : 'stopped');
      process.stderr.write(`loreley ${options.role}: ${error.message}\n`);
      await runtime.close().catch(() => undefined);
      process.exit(error instanceof ConfigurationError ? EXIT_CONFIG : 1);
    }
    crash(error);
  }
  const stopping = setTimeout(() => {
    runtime!.logger.warn('shutdown took too long: exiting');
    runtime!.log.flush();
    process.exit(0);
  }, 15_000);
  stopping.unref();
  await runtime.close();
  runtime.logger.info('stopped');
  runtime.log.flush();
  process.exit(0);
}
