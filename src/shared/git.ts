import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Named git operations, each one `git` process run directly (no shell). Nothing is cached, so
 * several processes can share one clone as long as writers hold the clone's lock.
 *
 * Not simple-git: it waits an extra 50 ms after every command that prints nothing (`worktree add
 * --quiet`, `commit --quiet`, `push --quiet`, …), about 300 ms per job, six times the git work.
 */

// A credential prompt would hang a worker forever; a missing credential must fail instead.
const GIT_ENV = { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' };
const MAX_OUTPUT = 256 * 1024 * 1024;

export class GitError extends Error {
  override readonly name = 'GitError';
}

export interface Git {
  /** Runs `git <args>` in the directory and resolves with its stdout. */
  raw(args: readonly string[]): Promise<string>;
}

function runGit(cwd: string | undefined, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd, env: GIT_ENV, maxBuffer: MAX_OUTPUT, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const detail = (stderr || error.message).trim().split('\n').slice(-3).join(' ');
        reject(new GitError(`git ${args[0]} failed: ${detail}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

export function gitAt(directory: string | undefined = undefined): Git {
  return { raw: (args) => runGit(directory, args) };
}

export function isGitRepository(directory: string): boolean {
  return existsSync(path.join(directory, '.git')) || existsSync(path.join(directory, 'HEAD'));
}

/** Clones `remote` into `directory` unless a clone is already there; then fetches every branch. */
export async function cloneOrFetch(remote: string, directory: string): Promise<'cloned' | 'fetched'> {
  if (!isGitRepository(directory)) {
    await mkdir(path.dirname(directory), { recursive: true });
    await gitAt().raw(['clone', '--no-checkout', '--quiet', remote, directory]);
    return 'cloned';
  }
  await fetchAll(directory);
  return 'fetched';
}

export async function fetchAll(directory: string): Promise<void> {
  await gitAt(directory).raw(['fetch', '--quiet', '--prune', 'origin', '+refs/heads/*:refs/remotes/origin/*']);
}

export async function hasCommit(directory: string, commit: string): Promise<boolean> {
  try {
    await gitAt(directory).raw(['cat-file', '-e', `${commit}^{commit}`]);
    return true;
  } catch {
    return false;
  }
}

export async function resolveCommit(directory: string, ref: string): Promise<string> {
  return (await gitAt(directory).raw(['rev-parse', '--verify', '--quiet', `${ref}^{commit}`])).trim();
}

/** Adds a path to the clone's shared exclude file, so worktrees never commit it. */
export async function excludePath(directory: string, pattern: string): Promise<void> {
  const commonDir = (await gitAt(directory).raw(['rev-parse', '--git-common-dir'])).trim();
  const file = path.resolve(directory, commonDir, 'info', 'exclude');
  await mkdir(path.dirname(file), { recursive: true });
  const current = existsSync(file) ? await readFile(file, 'utf8') : '';
  if (!current.split('\n').includes(pattern)) await appendFile(file, `${current.endsWith('\n') || current === '' ? '' : '\n'}${pattern}\n`);
}

/** A worktree at `commit` on `branch` (reset if it exists, so a retried job starts clean). */
export async function addWorktree(baseClone: string, worktree: string, branch: string, commit: string): Promise<void> {
  await mkdir(path.dirname(worktree), { recursive: true });
  await gitAt(baseClone).raw(['worktree', 'add', '--quiet', '--force', '-B', branch, worktree, commit]);
}

export async function removeWorktree(baseClone: string, worktree: string): Promise<void> {
  try {
    await gitAt(baseClone).raw(['worktree', 'remove', '--force', '--force', worktree]);
  } catch {
    // Not registered (a half-made worktree): the directory is removed by the caller.
  }
}

export async function pruneWorktrees(baseClone: string): Promise<void> {
  await gitAt(baseClone).raw(['worktree', 'prune']);
}

export interface Author {
  readonly name: string;
  readonly email: string;
}

export interface Commit {
  readonly hash: string;
  /** Paths the commit changed against its parent. */
  readonly files: readonly string[];
}

/** Stages everything and commits; returns undefined when there was nothing to commit. */
export async function commitAll(worktree: string, message: string, author: Author): Promise<Commit | undefined> {
  const git = gitAt(worktree);
  await git.raw(['add', '--all']);
  const files = (await git.raw(['diff', '--cached', '--name-only'])).split('\n').map((line) => line.trim()).filter((line) => line !== '');
  if (files.length === 0) return undefined;
  await git.raw(['-c', `user.name=${author.name}`, '-c', `user.email=${author.email}`, 'commit', '--quiet', '--no-verify', '--no-gpg-sign', '-m', message]);
  return { hash: (await git.raw(['rev-parse', 'HEAD'])).trim(), files };
}

export async function diff(directory: string, from: string, to: string, paths: readonly string[] = []): Promise<string> {
  return gitAt(directory).raw(['diff', '--no-color', from, to, ...(paths.length ? ['--', ...paths] : [])]);
}

/** Pushes a branch, overwriting it, so a retried job's push succeeds. */
export async function pushBranch(directory: string, branch: string, commit: string): Promise<void> {
  await gitAt(directory).raw(['push', '--quiet', '--force', 'origin', `${commit}:refs/heads/${branch}`]);
}

