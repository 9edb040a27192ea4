import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Pool } from '../shared/db/pool.ts';
import {
  addWorktree,
  gitAt,
  cloneOrFetch,
  deleteRefs,
  excludePath,
  fetchAll,
  hasCommit,
  pruneWorktrees,
  removeWorktree,
} from '../shared/git.ts';
import type { Logger } from '../shared/logger.ts';
import { processAlive } from '../shared/process-alive.ts';
import { withFileLock } from './clone-lock.ts';

/**
 * The worker's view of the evolved repository: one base clone per host at `WORKER_REPO_WORKTREE`
 * shared by every worker process there, and a git worktree per job beside it in
 * `<WORKER_REPO_WORKTREE>-worktrees/<job id>`.
 */

export const WORKTREE_MARKER = '.loreley-worktree';

export interface JobWorktree {
  readonly jobId: string;
  readonly directory: string;
  readonly branch: string;
  readonly baseCommit: string;
  /** Beside the worktree, never inside it: the agent's prompt, the job context. */
  readonly metaDirectory: string;
}

interface Marker {
  readonly jobId: string;
  readonly workerId: string;
  readonly host: string;
  readonly pid: number;
}


/** Where a worker host's copy comes from (`WORKER_REPO_REMOTE_URL`) and lives (`WORKER_REPO_WORKTREE`). */
export interface CloneSettings {
  readonly remoteUrl: string;
  readonly baseClone: string;
  /** Job branches are pushed (`WORKER_REPO_PUSH`): the local copies can go. Absent: kept. */
  readonly push?: boolean;
}

export class WorkerRepository {
  readonly settings: CloneSettings;
  readonly worktreesRoot: string;
  private readonly logger: Logger;
  private readonly owner: Omit<Marker, 'jobId'>;

  /** `pool` is no longer used (the clone lock is a file); accepted so callers need not change. */
  constructor(options: { settings: CloneSettings; pool?: Pool; logger: Logger; workerId: string; host: string }) {
    this.settings = options.settings;
    this.logger = options.logger;
    this.worktreesRoot = `${options.settings.baseClone}-worktrees`;
    this.owner = { workerId: options.workerId, host: options.host, pid: process.pid };
  }

  /**
   * Runs `fn` holding the clone's lock: a lock file beside the clone that dies with its holder
   * (see clone-lock.ts). No database: cleaning a worktree up works during an outage.
   */
  private withCloneLock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(`${this.settings.baseClone}.lock`, fn);
  }

  /** Clones the remote on first use, then fetches when `commit` is not there yet. */
  async ensureCommit(commit: string): Promise<void> {
    const base = this.settings.baseClone;
    if (existsSync(base) && (await hasCommit(base, commit))) return;
    await this.withCloneLock(async () => {
      if (existsSync(base) && (await hasCommit(base, commit))) return;
      const started = performance.now();
      const how = await cloneOrFetch(this.settings.remoteUrl, base);
      await excludePath(base, WORKTREE_MARKER);
      this.logger.info({ remote: this.settings.remoteUrl, clone: base, ms: Math.round(performance.now() - started) }, how === 'cloned' ? 'base clone created' : 'base clone fetched');
      if (!(await hasCommit(base, commit))) {
        await fetchAll(base);
        if (!(await hasCommit(base, commit))) throw new Error(`commit ${commit} is not in ${this.settings.remoteUrl}`);
      }
    });
  }

  async createWorktree(jobId: string, branch: string, baseCommit: string): Promise<JobWorktree> {
    // The clone usually has the parent already; looking first would cost a git process every job.
    if (!existsSync(this.settings.baseClone)) await this.ensureCommit(baseCommit);
    const directory = path.join(this.worktreesRoot, jobId);
    const metaDirectory = path.join(this.worktreesRoot, `${jobId}.meta`);
    // A retried job on this host may find its previous attempt's worktree.
    if (existsSync(directory)) await this.removeWorktree({ jobId, directory, branch, baseCommit, metaDirectory });
    await mkdir(this.worktreesRoot, { recursive: true });
    // Worktree registration writes into the shared clone's .git, so it takes the clone's lock.
    // When job branches are pushed, the job's commit is pushed by hash from a detached HEAD: no
    // local branch is made, so none has to be deleted (a git process fewer per job).
    const localBranch = this.settings.push ? undefined : branch;
    await this.withCloneLock(async () => {
      // A detached worktree is registered without `git worktree add`, which would trip over a
      // half-written registration; so such leftovers are looked for first (a directory listing:
      // no git process unless one is found).
      if (localBranch === undefined) await this.clearBrokenRegistrations();
      try {
        await addWorktree(this.settings.baseClone, directory, localBranch, baseCommit);
      } catch (error) {
        if (await hasCommit(this.settings.baseClone, baseCommit)) {
          // A worker killed inside `git worktree add` leaves a half-written registration that
          // breaks every later add ("failed to read .git/worktrees/<id>/commondir"): clear such
          // leftovers (we hold the lock, so no add is under way) and try once more.
          if ((await this.clearBrokenRegistrations()) === 0) throw error;
          await addWorktree(this.settings.baseClone, directory, localBranch, baseCommit);
          return;
        }
        await fetchAll(this.settings.baseClone);
        if (!(await hasCommit(this.settings.baseClone, baseCommit))) throw new Error(`commit ${baseCommit} is not in ${this.settings.remoteUrl}`);
        await addWorktree(this.settings.baseClone, directory, localBranch, baseCommit);
      }
    });
    const marker: Marker = { jobId, ...this.owner };
    await writeFile(path.join(directory, WORKTREE_MARKER), `${JSON.stringify(marker)}\n`);
    await mkdir(metaDirectory, { recursive: true });
    await writeFile(path.join(metaDirectory, WORKTREE_MARKER), `${JSON.stringify(marker)}\n`);
    return { jobId, directory, branch, baseCommit, metaDirectory };
  }

  /** Removes registrations in the clone's `.git/worktrees` whose `gitdir` or `commondir` is missing or empty; the caller holds the lock. */
  private async clearBrokenRegistrations(): Promise<number> {
    const admin = path.join(this.settings.baseClone, '.git', 'worktrees');
    if (!existsSync(admin)) return 0;
    let cleared = 0;
    for (const name of readdirSync(admin)) {
      const entry = path.join(admin, name);
      const written = (file: string) => existsSync(path.join(entry, file)) && statSync(path.join(entry, file)).size > 0;
      if (written('gitdir') && written('commondir')) continue;
      await rm(entry, { recursive: true, force: true });
      cleared += 1;
      this.logger.warn({ registration: entry }, 'removed a half-made worktree registration (a worker killed while adding it)');
    }
    if (cleared > 0) await pruneWorktrees(this.settings.baseClone).catch(() => undefined);
    return cleared;
  }

  /**
   * Unregisters the worktree (under the clone's lock) and deletes it and its meta directory. A job
   * made no local branch when branches are pushed; without push the branch is the only copy of
   * the result and is kept.
   */
  async removeWorktree(worktree: JobWorktree): Promise<void> {
    await this.withCloneLock(() => removeWorktree(this.settings.baseClone, worktree.directory));
    await rm(worktree.directory, { recursive: true, force: true });
    await rm(worktree.metaDirectory, { recursive: true, force: true });
  }

  /** Deletes local branches; git refuses one checked out in a worktree, which is then kept. */
  private async deleteBranches(branches: readonly string[]): Promise<string[]> {
    const deleted: string[] = [];
    for (const branch of branches) {
      try {
        await gitAt(this.settings.baseClone).raw(['branch', '-D', '--quiet', branch]);
        deleted.push(branch);
      } catch {
        // Not there (never created, or deleted already), or in use by a live job's worktree.
      }
    }
    return deleted;
  }

  /**
   * Deletes local job branches (`evolution/job/*`) that killed workers left in the base clone. A
   * branch checked out in a worktree belongs to a live job (or to one the sweep has not removed
   * yet) and is kept: git refuses to delete it. Only when branches are pushed: otherwise the local
   * branch is the result.
   */
  async sweepBranches(): Promise<string[]> {
    if (!this.settings.push || !existsSync(path.join(this.settings.baseClone, '.git'))) return [];
    return this.withCloneLock(async () => {
      // Pushes to 'origin' (by older workers) left a remote-tracking ref per job, which
      // every later push read: the remote deletes finished jobs' branches, so these name nothing.
      const tracking = await deleteRefs(this.settings.baseClone, 'refs/remotes/origin/evolution/job/');
      if (tracking > 0) this.logger.info({ refs: tracking }, 'deleted remote-tracking refs of job branches left by older pushes');
      const listed = await gitAt(this.settings.baseClone).raw(['for-each-ref', '--format=%(refname:short)', 'refs/heads/evolution/job/']);
      const branches = listed.split('\n').map((line) => line.trim()).filter(Boolean);
      if (branches.length === 0) return [];
      await pruneWorktrees(this.settings.baseClone);
      return this.deleteBranches(branches);
    });
  }

  /**
   * Removes what killed workers left: only directories carrying our marker, and only those whose
   * owning process is gone (another live worker on this host may be mid-job).
   */
  async sweepAbandoned(): Promise<string[]> {
    if (!existsSync(this.worktreesRoot)) return [];
    const swept: string[] = [];
    for (const name of readdirSync(this.worktreesRoot)) {
      const directory = path.join(this.worktreesRoot, name);
      const markerFile = path.join(directory, WORKTREE_MARKER);
      if (!existsSync(markerFile)) continue;
      let marker: Marker;
      try {
        marker = JSON.parse(readFileSync(markerFile, 'utf8')) as Marker;
      } catch {
        continue;
      }
      // Another host's worktree (a shared filesystem) is not ours to judge.
      if (marker.host !== this.owner.host) continue;
      // A live owner may be mid-job, even one with our id (two foreground `loreley worker`s).
      if (marker.pid !== process.pid && processAlive(marker.pid)) continue;
      if (existsSync(path.join(this.settings.baseClone, '.git'))) {
        await this.withCloneLock(() => removeWorktree(this.settings.baseClone, directory));
      }
      await rm(directory, { recursive: true, force: true });
      swept.push(directory);
    }
    if (swept.length > 0 && existsSync(path.join(this.settings.baseClone, '.git'))) {
      await this.withCloneLock(() => pruneWorktrees(this.settings.baseClone));
    }
    return swept;
  }
}
