import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { Commands } from './experiment.ts';

/**
 * The plain-git baseline of a job: what a worker must do at the least, run directly with the git
 * CLI, one process after the other, nothing recorded anywhere. Cloned once (without a checkout,
 * like Loreley's base clone); per job: a worktree on a fresh branch at the base commit, the same
 * agent command, add and commit, push the branch, the same evaluator, remove the worktree.
 */
export class PlainGitJobs {
  private readonly clone: string;
  private readonly worktrees: string;
  private readonly baseCommit: string;
  private readonly commands: Commands;
  private count = 0;

  constructor(options: { remote: string; baseCommit: string; directory: string; commands: Commands }) {
    this.clone = path.join(options.directory, 'plain-clone');
    this.worktrees = path.join(options.directory, 'plain-worktrees');
    this.baseCommit = options.baseCommit;
    this.commands = options.commands;
    run('git', ['clone', '--quiet', '--no-checkout', options.remote, this.clone], options.directory);
  }

  /** Runs one job; returns its wall time in ms. */
  job(): number {
    const n = this.count++;
    const branch = `plain/job/${n}`;
    const worktree = path.join(this.worktrees, String(n));
    const started = performance.now();
    run('git', ['worktree', 'add', '--quiet', '--force', '-B', branch, worktree, this.baseCommit], this.clone);
    run(this.commands.agent[0], this.commands.agent.slice(1), worktree);
    run('git', ['add', '--all'], worktree);
    run('git', ['-c', 'user.name=Plain', '-c', 'user.email=plain@localhost', 'commit', '--quiet', '--no-verify', '--no-gpg-sign', '-m', `plain job ${n}`], worktree);
    run('git', ['push', '--quiet', '--force', 'origin', `HEAD:refs/heads/${branch}`], worktree);
    const output = run(this.commands.evaluator[0], this.commands.evaluator.slice(1), worktree);
    JSON.parse(output.trim().split('\n').pop()!);
    run('git', ['worktree', 'remove', '--force', '--force', worktree], this.clone);
    return performance.now() - started;
  }
}

function run(file: string, args: readonly string[], cwd: string): string {
  return execFileSync(file, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GIT_TERMINAL_PROMPT: '0' } });
}
