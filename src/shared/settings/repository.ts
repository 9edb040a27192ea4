import path from 'node:path';
import type { EnvReader } from './reader.ts';

/**
 * The experiment's repository, which both roles read: the remote both clone from, the branch
 * whose tip is the root at the first start (unless `MAPELITES_EXPERIMENT_ROOT_COMMIT` names it),
 * and whether job branches and the best branch are pushed back to it.
 */
export interface RepositorySettings {
  /** `WORKER_REPO_REMOTE_URL`; a local path is made absolute against the working directory. */
  readonly remoteUrl: string;
  /** `WORKER_REPO_BRANCH`. */
  readonly branch: string;
  /** `MAPELITES_EXPERIMENT_ROOT_COMMIT`: a commit or ref of the remote; the branch's tip when unset. */
  readonly rootCommit: string | undefined;
  /** `WORKER_REPO_PUSH`: push each job's branch and the best branch to the remote. */
  readonly push: boolean;
}

export function readRepositorySettings(reader: EnvReader, cwd: string): RepositorySettings {
  const remote = reader.requiredString('WORKER_REPO_REMOTE_URL', 'the git repository to evolve: a path or URL');
  const remoteUrl = remote !== '' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(remote) && !/^[^/]+@[^/]+:/.test(remote)
    ? path.resolve(cwd, remote)
    : remote;
  return {
    remoteUrl,
    branch: reader.string('WORKER_REPO_BRANCH', 'main'),
    rootCommit: reader.optionalString('MAPELITES_EXPERIMENT_ROOT_COMMIT'),
    push: reader.bool('WORKER_REPO_PUSH', true),
  };
}
