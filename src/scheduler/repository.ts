import { ConfigurationError } from '../shared/errors.ts';
import { existsSync } from 'node:fs';
import { cloneOrFetch, fetchAll, hasCommit, pushBranch, resolveCommit } from '../shared/git.ts';
import type { Settings } from '../shared/settings/index.ts';
import { fetchFromClone, remoteUrl, setBranch } from './git-commands.ts';

/**
 * The scheduler's own clone of the evolved repository (`SCHEDULER_REPO_ROOT`, by default
 * `<WORKER_REPO_WORKTREE>-scheduler`): it reads commits for behaviour descriptors and writes the
 * best branch, and never shares a working tree with the workers.
 */
export class SchedulerRepository {
  readonly directory: string;
  readonly remote: string;
  readonly branch: string;
  private readonly workerClone: string;
  private readonly push: boolean;

  constructor(settings: Settings) {
    this.directory = settings.scheduler.repoRoot ?? `${settings.worker.git.baseClone}-scheduler`;
    this.remote = settings.repository.remoteUrl;
    this.branch = settings.repository.branch;
    this.workerClone = settings.worker.git.baseClone;
    this.push = settings.repository.push;
  }

  /** Clones or fetches; fails when the directory is a clone of another repository. */
  async prepare(): Promise<void> {
    if (existsSync(this.directory)) {
      const origin = await remoteUrl(this.directory);
      if (origin !== undefined && normalizeUrl(origin) !== normalizeUrl(this.remote)) {
        throw new ConfigurationError(`the scheduler clone ${this.directory} is a clone of ${origin}, not of WORKER_REPO_REMOTE_URL=${this.remote}: remove it or set SCHEDULER_REPO_ROOT to another directory`);
      }
    }
    await cloneOrFetch(this.remote, this.directory);
  }

  /** The commit a ref or hash names, or undefined. */
  async resolve(ref: string): Promise<string | undefined> {
    try {
      const commit = await resolveCommit(this.directory, ref);
      return commit === '' ? undefined : commit;
    } catch {
      return undefined;
    }
  }

  async tip(): Promise<string | undefined> {
    return this.resolve(`refs/remotes/origin/${this.branch}`);
  }

  /**
   * Makes a commit readable here: fetched from the remote, or (when workers do not push) from the
   * local worker clone's branches.
   */
  async ensureCommit(commit: string): Promise<void> {
    if (await hasCommit(this.directory, commit)) return;
    await fetchAll(this.directory);
    if (await hasCommit(this.directory, commit)) return;
    if (existsSync(this.workerClone)) {
      await fetchFromClone(this.directory, this.workerClone).catch(() => undefined);
      if (await hasCommit(this.directory, commit)) return;
    }
    throw new Error(`commit ${commit} is neither on the remote ${this.remote} nor in the worker clone ${this.workerClone}`);
  }

  /** Writes `branch` at `commit` here and, when workers push, on the remote too. */
  async writeBranch(branch: string, commit: string): Promise<{ pushed: boolean }> {
    await this.ensureCommit(commit);
    await setBranch(this.directory, branch, commit);
    if (!this.push) return { pushed: false };
    await pushBranch(this.directory, 'origin', branch, commit);
    return { pushed: true };
  }
}

export function normalizeUrl(url: string): string {
  return url.trim().replace(/\/+$/, '').replace(/\.git$/, '');
}
