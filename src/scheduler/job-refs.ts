import { finishedJobIds } from '../shared/db/jobs.ts';
import { fetchAll, gitAt } from '../shared/git.ts';
import type { SchedulerContext } from './context.ts';

/**
 * Every job pushes a branch (`evolution/job/<namespace>/<job id>`); left there, they pile up, and
 * every push into the remote pays for them: receive-pack advertises every ref before it accepts
 * anything (525 ms per push at 10,000 branches against 32 ms at a few; protocol v2 does not cover
 * push). So once a job has finished, its branch goes, and its commit stays reachable from one ref
 * per experiment, `evolution/keep/<namespace>`: a chain of commits (empty tree) whose parents are
 * the previous link and the job commits taken in. Nothing a host or `loreley rebuild` needs is
 * lost: a clone or `git fetch` of the branches brings every job commit along, and `git gc` on the
 * remote keeps them.
 *
 * Once per tick, after the notes (the scheduler is the only writer while it holds its lock): one
 * fetch, one `for-each-ref`, one query, one `commit-tree` and one atomic push that moves the keep
 * branch and deletes the branches together (either both or neither). A keep branch another
 * scheduler moved meanwhile makes the push fail as a non-fast-forward; the next tick builds on it.
 */

/** Branches taken in per tick at most (a backlog drains over the next ticks). */
const BRANCHES_PER_TICK = 500;
const IDENTITY = ['-c', 'user.name=Loreley', '-c', 'user.email=loreley@localhost'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function keepBranchName(namespace: string): string {
  return `evolution/keep/${namespace}`;
}

export interface PruneResult {
  readonly pruned: number;
}

export class JobRefPruner {
  private readonly context: SchedulerContext;
  private emptyTree: string | undefined;

  constructor(context: SchedulerContext) {
    this.context = context;
  }

  async prune(): Promise<PruneResult> {
    const { settings, pool, experimentId, repository, logger } = this.context;
    if (!settings.repository.push) return { pruned: 0 };
    const directory = repository.directory;
    const namespace = settings.experiment.namespace;
    const git = gitAt(directory);
    await fetchAll(directory);
    const listed = await git.raw(['for-each-ref', '--format=%(objectname) %(refname)', `refs/remotes/origin/evolution/job/${namespace}/`]);
    const branches = new Map<string, string>();
    for (const line of listed.split('\n')) {
      const [commit, ref] = line.trim().split(' ');
      const jobId = ref?.slice(ref.lastIndexOf('/') + 1);
      if (commit && jobId && UUID.test(jobId)) branches.set(jobId, commit);
    }
    if (branches.size === 0) return { pruned: 0 };
    const finished = (await finishedJobIds(pool, experimentId, [...branches.keys()])).slice(0, BRANCHES_PER_TICK);
    if (finished.length === 0) return { pruned: 0 };

    const keep = keepBranchName(namespace);
    const tip = await git.raw(['rev-parse', '--verify', '--quiet', `refs/remotes/origin/${keep}`]).then((out) => out.trim(), () => '');
    this.emptyTree ??= (await git.raw(['hash-object', '-w', '-t', 'tree', '/dev/null'])).trim();
    const parents = [...new Set([...(tip ? [tip] : []), ...finished.map((jobId) => branches.get(jobId)!)])];
    const link = (await git.raw([...IDENTITY, 'commit-tree', this.emptyTree, ...parents.flatMap((parent) => ['-p', parent]), '-m', `loreley: keep ${finished.length} job commit(s) of ${namespace}`])).trim();
    const deletions = finished.map((jobId) => `:refs/heads/evolution/job/${namespace}/${jobId}`);
    try {
      await git.raw(['push', '--atomic', '--quiet', '--no-verify', 'origin', `${link}:refs/heads/${keep}`, ...deletions]);
    } catch (error) {
      if (!/does not support --atomic/i.test(String(error))) throw error;
      // A server without atomic pushes: the keep branch first, so a failure in between only
      // leaves branches for the next tick, never a commit unreachable.
      await git.raw(['push', '--quiet', '--no-verify', 'origin', `${link}:refs/heads/${keep}`]);
      await git.raw(['push', '--quiet', '--no-verify', 'origin', ...deletions]);
    }
    // What the push did, here too: the next tick builds on this link even before it fetches.
    await git.raw(['update-ref', `refs/remotes/origin/${keep}`, link]);
    logger.info({ pruned: finished.length, keep, link }, 'finished jobs\' branches deleted from the remote; their commits are kept by the keep branch');
    return { pruned: finished.length };
  }
}
