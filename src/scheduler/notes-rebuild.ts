import pino from 'pino';
import { saveSamplerState } from '../shared/db/archive.ts';
import { ensureExperiment, recordExperimentRoot } from '../shared/db/experiments.ts';
import { listByStatus, type EvolutionJob } from '../shared/db/jobs.ts';
import { withTransaction, type Pool } from '../shared/db/pool.ts';
import { restoreCandidates, type RestoredCard, type RestoredJob, type RestoredMetric } from '../shared/db/rebuild.ts';
import { UserError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { fetchNotes, readNotes } from '../shared/notes.ts';
import { createBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import { experimentRecords, type CandidateRecord } from './notes-record.ts';
import { EvolutionScheduler } from './scheduler.ts';

export interface RebuildProgress {
  (line: string): void;
}

export interface RebuildResult {
  readonly root: string;
  readonly candidates: number;
  readonly ingested: number;
  readonly rejected: number;
  /** Replayed ingestions whose outcome differed from the one the note recorded. */
  readonly differing: number;
  readonly elites: number;
  readonly best: { readonly commit: string; readonly fitness: number } | null;
  readonly samplerRestored: boolean;
}

/**
 * Restores an experiment into an empty database from its remote alone: the git notes on its
 * commits (`refs/notes/loreley`) give the identity, the root, every ingested candidate with its
 * metrics and card, and the sampler's last state. The archive is not copied but rebuilt by
 * replaying every ingestion in its original order through the scheduler's own `ingest`, so
 * refits and migrations happen at the same counts and the same elites come out.
 *
 * Reads every note with two git processes (`notes list`, one `cat-file --batch`) and writes the
 * rows in three statements; the replay is a few queries per candidate.
 */
export async function rebuildFromNotes(settings: Settings, pool: Pool, progress: RebuildProgress, logger: Logger = pino({ level: 'silent' })): Promise<RebuildResult> {
  const experimentId = settings.experiment.uuid;
  // The queue is never started: the archive only needs the scheduler's clone and descriptor.
  const boss = createBoss({ url: settings.database.url ?? '', settings, applicationName: 'loreley-rebuild', supervise: false });
  const scheduler = new EvolutionScheduler({ settings, pool, boss, logger, workerId: 'rebuild' });
  const remote = settings.repository.remoteUrl;

  progress(`fetching ${remote} into ${scheduler.repository.directory}`);
  await scheduler.repository.prepare();
  if (!(await fetchNotes(scheduler.repository.directory))) throw new UserError(`${remote} has no Loreley git notes (refs/notes/loreley): nothing to rebuild from`);
  const notes = await readNotes(scheduler.repository.directory);
  const { candidates, state } = experimentRecords(notes, experimentId);
  if (candidates.length === 0) throw new UserError(`${remote} has git notes, but none of experiment ${settings.experiment.raw} (${experimentId})`);
  const baseline = candidates.find((record) => record.job.kind === 'baseline');
  const root = state?.root ?? baseline?.commit;
  if (!root) throw new UserError(`the notes of experiment ${settings.experiment.raw} name no root commit (no baseline and no state record)`);
  progress(`read ${notes.size} notes: ${candidates.length} candidates of ${settings.experiment.raw}, root ${root.slice(0, 12)}`);

  await ensureExperiment(pool, settings.experiment);
  await recordExperimentRoot(pool, experimentId, remote, state?.branch ?? settings.repository.branch, root);
  const rows = toRows(candidates);
  await withTransaction(pool, (client) => restoreCandidates(client, experimentId, rows.jobs, rows.cards, rows.metrics));
  progress(`restored ${rows.jobs.length} jobs, ${rows.cards.length} commit cards, ${rows.metrics.length} metrics`);

  await scheduler.archive.open();
  const jobs = new Map<string, EvolutionJob>((await listByStatus(pool, experimentId, ['succeeded'], rows.jobs.length + 1)).map((job) => [job.id, job]));
  let ingested = 0;
  let rejected = 0;
  let differing = 0;
  let reported = performance.now();
  for (const [index, record] of candidates.entries()) {
    const job = jobs.get(record.job.id);
    if (!job) throw new Error(`job ${record.job.id} was not restored`);
    const outcome = await scheduler.archive.ingest(job);
    if (outcome.status === 'ingested') ingested += 1;
    else rejected += 1;
    if (outcome.status !== record.ingestion.status) {
      differing += 1;
      logger.warn({ jobId: job.id, noted: record.ingestion.status, replayed: outcome.status }, 'replayed ingestion differs from the note');
    }
    if (performance.now() - reported > 1000 || index === candidates.length - 1) {
      reported = performance.now();
      progress(`replayed ${index + 1}/${candidates.length} ingestions (${ingested} placed, ${rejected} not better)`);
    }
  }

  let samplerRestored = false;
  if (state) {
    await saveSamplerState(pool, experimentId, state.rngState, state.nextIsland);
    samplerRestored = true;
  }
  const best = await scheduler.archive.best();
  const { elites } = await scheduler.archive.coverage();
  return { root, candidates: candidates.length, ingested, rejected, differing, elites, best: best ? { commit: best.commitHash, fitness: best.fitness } : null, samplerRestored };
}

function toRows(candidates: readonly CandidateRecord[]): { jobs: RestoredJob[]; cards: RestoredCard[]; metrics: RestoredMetric[] } {
  const jobs: RestoredJob[] = [];
  const cards: RestoredCard[] = [];
  const metrics: RestoredMetric[] = [];
  for (const record of candidates) {
    const { job } = record;
    const baseline = job.kind === 'baseline';
    jobs.push({
      id: job.id, kind: job.kind, baseCommit: job.base, resultCommit: baseline ? null : record.commit, inspirations: job.inspirations ?? [],
      goal: job.goal ?? null, payload: job.payload ?? {}, island: job.island, priority: job.priority ?? 0, attempts: job.attempts ?? 0,
      workerId: job.worker ?? null, workerHost: job.host ?? null, createdAt: job.createdAt, startedAt: job.startedAt ?? null, finishedAt: job.finishedAt ?? null,
    });
    if (record.card) {
      cards.push({ commitHash: record.commit, jobId: job.id, parentCommit: record.card.parent, branch: record.card.branch, author: record.card.author, message: record.card.message, summary: record.card.summary, changedFiles: record.card.changedFiles ?? [] });
    }
    for (const metric of record.metrics ?? []) {
      metrics.push({ commitHash: record.commit, jobId: job.id, name: metric.name, value: metric.value, unit: metric.unit ?? null, higherIsBetter: metric.higherIsBetter ?? true });
    }
  }
  return { jobs, cards, metrics };
}
