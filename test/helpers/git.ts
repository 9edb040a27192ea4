import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Real git repositories in temp dirs for tests. */

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 't@example.com' },
  }).trim();
}

/**
 * A temp dir others may traverse (mkdtemp makes it 0700): as root, an embedded PostgreSQL below it
 * runs as the postgres user and must reach its data directory.
 */
export function tempDir(prefix = 'loreley-test-'): string {
  const directory = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(directory, 0o755);
  created.push(directory);
  return directory;
}

// Removed when the test process ends (every server and child is gone by then); set
// LORELEY_KEEP_TEST_DIRS=1 to keep them for a post-mortem.
const created: string[] = [];
process.on('exit', () => {
  if (process.env.LORELEY_KEEP_TEST_DIRS === '1') return;
  for (const directory of created) {
    try {
      rmSync(directory, { recursive: true, force: true });
    } catch {
      // A file owned by another user, or already gone.
    }
  }
});

/**
 * A bare "remote" with one commit on `main` holding `files`. Returns the remote's path and the
 * commit hash.
 */
export function createRemote(files: Record<string, string>, root = tempDir()): { remote: string; commit: string; root: string } {
  const work = path.join(root, 'seed');
  const remote = path.join(root, 'remote.git');
  mkdirSync(work, { recursive: true });
  git(work, 'init', '--quiet', '--initial-branch=main');
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(work, name)), { recursive: true });
    writeFileSync(path.join(work, name), content);
  }
  git(work, 'add', '--all');
  git(work, 'commit', '--quiet', '-m', 'initial');
  const commit = git(work, 'rev-parse', 'HEAD');
  git(root, 'clone', '--quiet', '--bare', work, remote);
  return { remote, commit, root };
}
