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

export interface WorkerSettings {
  readonly git: WorkerGitSettings;
  readonly evaluator: CommandSettings;
  /** Jobs one worker process runs at once. */
  readonly concurrency: number;
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
      timeoutSeconds: reader.int('WORKER_EVALUATOR_TIMEOUT_SECONDS', 600, { min: 1 }),
    },
    concurrency: reader.int('WORKER_CONCURRENCY', 1, { min: 1, max: 64 }),
  };
}
