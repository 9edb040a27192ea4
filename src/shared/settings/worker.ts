import path from 'node:path';
import type { ExperimentIdentity } from '../experiment.ts';
import type { EnvReader } from './reader.ts';

/** How a worker host keeps its copy of the experiment's repository and signs its commits. */
export interface WorkerGitSettings {
  /**
   * `WORKER_REPO_WORKTREE` (the original's name): the host's base clone, not a worktree. Per-job
   * worktrees live beside it in `<baseClone>-worktrees/`.
   */
  readonly baseClone: string;
  readonly authorName: string;
  readonly authorEmail: string;
}

export interface CommandSettings {
  readonly command: readonly string[];
  readonly timeoutSeconds: number;
}

export const SANDBOX_MODES = ['none', 'namespace'] as const;
export const CONTAINMENT_MODES = ['auto', 'pid-namespace', 'process-group'] as const;

/** How agent and evaluator commands are contained and sandboxed (src/shared/sandbox.ts). */
export interface SandboxSettings {
  /** `namespace`: bubblewrap, read-only filesystem but the job's directories, no network, own /proc. */
  readonly mode: (typeof SANDBOX_MODES)[number];
  /** Set explicitly: a sandbox asked for but unavailable stops the worker instead of warning. */
  readonly required: boolean;
  /** The commands may use the network (the coding-agent CLIs always may). */
  readonly network: boolean;
  /** More directories the commands may write (a cache, a results directory). */
  readonly writable: readonly string[];
  /** How every process a command started is ended with it when there is no sandbox. */
  readonly containment: (typeof CONTAINMENT_MODES)[number];
}

export interface WorkerSettings {
  readonly git: WorkerGitSettings;
  readonly evaluator: CommandSettings & {
    /** Files the evaluator depends on, hashed at start-up and checked before each evaluation. */
    readonly files: readonly string[];
  };
  readonly sandbox: SandboxSettings;
  /** Jobs one worker process runs at once. */
  readonly concurrency: number;
  /** Commands in a PID namespace start from a long-lived launcher, not a fork of the worker (src/shared/launcher.ts). */
  readonly commandLauncher: boolean;
}

export function readWorkerSettings(reader: EnvReader, cwd: string, dataDir: string, experiment: ExperimentIdentity): WorkerSettings {
  const git: WorkerGitSettings = {
    baseClone: path.resolve(cwd, reader.string('WORKER_REPO_WORKTREE', path.join(dataDir, 'repos', experiment.namespace))),
    authorName: reader.string('WORKER_GIT_AUTHOR_NAME', 'Loreley'),
    authorEmail: reader.string('WORKER_GIT_AUTHOR_EMAIL', 'loreley@localhost'),
  };
  const evaluatorCommand = reader.argv('WORKER_EVALUATOR_COMMAND');
  if (evaluatorCommand === undefined && reader.raw('WORKER_EVALUATOR_COMMAND') === undefined) {
    reader.problem('WORKER_EVALUATOR_COMMAND', 'is required (the command that prints a JSON object of metrics)');
  }
  return {
    git,
    evaluator: {
      command: evaluatorCommand ?? [],
      timeoutSeconds: reader.int('WORKER_EVALUATOR_TIMEOUT_SECONDS', 900, { min: 1 }),
      files: reader.list('WORKER_EVALUATOR_FILES', []).map((file) => path.resolve(cwd, file)),
    },
    sandbox: {
      mode: reader.choice('WORKER_SANDBOX', SANDBOX_MODES, 'namespace'),
      required: reader.raw('WORKER_SANDBOX') !== undefined,
      network: reader.bool('WORKER_SANDBOX_NETWORK', false),
      writable: reader.list('WORKER_SANDBOX_WRITABLE', []).map((dir) => path.resolve(cwd, dir)),
      containment: reader.choice('WORKER_CONTAINMENT', CONTAINMENT_MODES, 'auto'),
    },
    concurrency: reader.int('WORKER_CONCURRENCY', 1, { min: 1, max: 64 }),
    commandLauncher: reader.bool('WORKER_COMMAND_LAUNCHER', true),
  };
}
