import { gitAt } from '../shared/git.ts';

/**
 * The git commands only the scheduler runs, beyond src/shared/git.ts: fetches from a worker clone,
 * moves the best branch. (The repository-state embedding reads objects through
 * embedding/git-objects.ts.)
 */

/** Fetches every branch of a local worker clone, for commits that were never pushed to the remote. */
export async function fetchFromClone(directory: string, clone: string): Promise<void> {
  await gitAt(directory).raw(['fetch', '--quiet', '--no-tags', clone, '+refs/heads/*:refs/loreley/worker/*']);
}

/** Points a local branch at a commit (creating or moving it). */
export async function setBranch(directory: string, branch: string, commit: string): Promise<void> {
  await gitAt(directory).raw(['update-ref', `refs/heads/${branch}`, commit]);
}

export async function remoteUrl(directory: string): Promise<string | undefined> {
  try {
    return (await gitAt(directory).raw(['remote', 'get-url', 'origin'])).trim();
  } catch {
    return undefined;
  }
}
