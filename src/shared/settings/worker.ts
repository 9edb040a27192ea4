import path from 'node:path';
import type { ExperimentIdentity } from '../experiment.ts';
import type { EnvReader } from './reader.ts';

export interface RepositorySettings {
  readonly remoteUrl: string;
  readonly branch: string;
  /** The base clone; per-job worktrees live beside it in `<worktree>-worktrees/`. */
  readonly worktree: string;
  readonly push: boolean;
  readonly authorName: string;
  readonly authorEmail: string;
}

export interface CommandSettings {
  readonly command: readonly string[];
  readonly timeoutSeconds: number;
}

export interface WorkerSettings {
  readonly repo: RepositorySettings;
  readonly evaluator: CommandSettings;
  /** Jobs one worker process runs at once. */
  readonly concurrency: number;
}

export function readWorkerSettings(reader: EnvReader, cwd: string, dataDir: string, experiment: ExperimentIdentity): WorkerSettings {
  const remote = reader.requiredString('WORKER_REPO_REMOTE_URL', 'the git repository to evolve: a path or URL');
  const remoteUrl = remote !== '' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(remote) && !/^[^/]+@[^/]+:/.test(remote)
    ? path.resolve(cwd, remote)
    : remote;
  const repo: RepositorySettings = {
    remoteUrl,
    branch: reader.string('WORKER_REPO_BRANCH', 'main'),
    worktree: path.resolve(cwd, reader.string('WORKER_REPO_WORKTREE', path.join(dataDir, 'repos', experiment.namespace))),
    push: reader.bool('WORKER_REPO_PUSH', true),
    authorName: reader.string('WORKER_GIT_AUTHOR_NAME', 'Loreley'),
    authorEmail: reader.string('WORKER_GIT_AUTHOR_EMAIL', 'loreley@localhost'),
  };
  const evaluatorCommand = reader.argv('WORKER_EVALUATOR_COMMAND');
  if (evaluatorCommand === undefined && reader.raw('WORKER_EVALUATOR_COMMAND') === undefined) {
    reader.problem('WORKER_EVALUATOR_COMMAND', 'is required (the command that prints a JSON object of metrics)');
  }
  return {
    repo,
    evaluator: {
      command: evaluatorCommand ?? [],
      timeoutSeconds: reader.int('WORKER_EVALUATOR_TIMEOUT_SECONDS', 600, { min: 1 }),
    },
    concurrency: reader.int('WORKER_CONCURRENCY', 1, { min: 1, max: 64 }),
  };
}
