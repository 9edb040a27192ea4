import { ensureExperiment, recordExperimentRoot } from '../shared/db/experiments.ts';
import { reopenExperiment } from '../shared/db/hosts.ts';
import { findJobsByKind, insertJob } from '../shared/db/jobs.ts';
import { ConfigurationError } from '../shared/errors.ts';
import type { SchedulerContext } from './context.ts';
import { experimentIsDone } from './finish.ts';
import { notedCandidatesOnRemote } from './notes.ts';
import { normalizeUrl } from './repository.ts';

/**
 * Experiment start: the scheduler clone, the root commit (recorded at the first start, checked
 * against the settings on every later one), the archive state and the root's baseline job.
 * Returns the root commit. Settings that cannot work throw `ConfigurationError`.
 */
export async function startExperiment(context: SchedulerContext): Promise<string> {
  const { settings, pool, logger, repository, experimentId } = context;
  const experiment = await ensureExperiment(pool, settings.experiment);
  const { remoteUrl: remote, branch } = settings.repository;
  const label = `experiment ${settings.experiment.raw} (${experimentId})`;
  if (experiment.repositoryUrl && normalizeUrl(experiment.repositoryUrl) !== normalizeUrl(remote)) {
    throw new ConfigurationError(`${label} was started on repository ${experiment.repositoryUrl}, but WORKER_REPO_REMOTE_URL is ${remote}: use the original repository or another EXPERIMENT_ID`);
  }
  await repository.prepare();

  let root: string;
  const configured = settings.repository.rootCommit;
  const configuredCommit = configured === undefined
    ? undefined
    : (await repository.resolve(configured)) ?? (await repository.resolve(`refs/remotes/origin/${configured}`));
  if (configured !== undefined && configuredCommit === undefined) {
    throw new ConfigurationError(`MAPELITES_EXPERIMENT_ROOT_COMMIT=${configured} is not a commit of ${remote}`);
  }
  if (experiment.rootCommit) {
    root = experiment.rootCommit;
    if (configuredCommit !== undefined && configuredCommit !== root) {
      throw new ConfigurationError(`${label} has root commit ${root}, but MAPELITES_EXPERIMENT_ROOT_COMMIT=${configured} is ${configuredCommit}: an experiment's root never changes; use another EXPERIMENT_ID`);
    }
    await repository.ensureCommit(root).catch(() => {
      throw new ConfigurationError(`${label} has root commit ${root}, which ${remote} does not contain: is WORKER_REPO_REMOTE_URL the experiment's repository?`);
    });
    if (experiment.branch && experiment.branch !== branch) {
      logger.warn({ recorded: experiment.branch, configured: branch }, 'WORKER_REPO_BRANCH differs from the branch recorded at the first start; the recorded root commit is kept');
    }
  } else {
    // An empty database over a remote that carries this experiment's notes is a lost database, not
    // a new experiment: starting again would bury days of evaluations under a second baseline.
    const noted = await notedCandidatesOnRemote(repository.directory, experimentId);
    if (noted > 0) {
      throw new ConfigurationError(`${label} has no data in this database, but ${remote} carries ${noted} evaluated candidate(s) of it in git notes: run 'loreley rebuild' to restore it, or use another EXPERIMENT_ID`);
    }
    const tip = configuredCommit ?? (await repository.tip());
    if (!tip) throw new ConfigurationError(`branch ${branch} does not exist on ${remote}: set WORKER_REPO_BRANCH or MAPELITES_EXPERIMENT_ROOT_COMMIT`);
    const recorded = await recordExperimentRoot(pool, experimentId, remote, branch, tip);
    root = recorded.rootCommit ?? tip;
    logger.info({ root, source: configuredCommit ? 'MAPELITES_EXPERIMENT_ROOT_COMMIT' : `tip of ${branch}` }, 'experiment root recorded');
  }

  await context.archive.open();
  // A finished experiment restarted with budget left is running again: extra hosts watching for
  // the end (--exit-when-done without a scheduler) must not leave.
  if (experiment.finishedAt && !(await experimentIsDone(context)) && (await reopenExperiment(pool, experimentId))) {
    logger.info('the experiment was marked finished, but its budget is not spent: running again');
  }
  const baselines = await findJobsByKind(pool, experimentId, 'baseline');
  const latest = baselines.at(-1);
  // A baseline that failed is tried again at the next start: the cause (the evaluator) may be fixed.
  if (!latest || latest.status === 'failed' || latest.status === 'cancelled') {
    if (latest) logger.warn({ jobId: latest.id, lastError: latest.lastError }, 'the last baseline evaluation failed: evaluating the root again');
    const job = await insertJob(pool, {
      experimentId,
      kind: 'baseline',
      baseCommit: root,
      goal: settings.scheduler.goal ?? null,
      payload: { baseline: true },
      island: 0,
      priority: settings.scheduler.baselinePriority,
    });
    logger.info({ jobId: job.id, root }, 'baseline evaluation of the root scheduled');
  }
  return root;
}
