import pino from 'pino';
import { saveSamplerState } from '../shared/db/archive.ts';
import { ensureExperiment, recordExperimentRoot } from '../shared/db/experiments.ts';
import { listByStatus, type EvolutionJob } from '../shared/db/jobs.ts';
import { withTransaction, type Pool } from '../shared/db/pool.ts';
import { markRefitsNoted } from '../shared/db/notes.ts';
import { restoreCandidates, type RestoredCard, type RestoredJob, type RestoredMetric } from '../shared/db/rebuild.ts';
import { UserError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { fetchNotes, readNotes } from '../shared/notes.ts';
import { createBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { StoredProjection } from './archive/fit.ts';
import { cellKey } from './archive/grid.ts';
import { experimentRecords, type CandidateRecord, type RefitRecord } from './notes-record.ts';
import { EvolutionScheduler } from './scheduler.ts';

export interface RebuildProgress {
  (line: string): void;
}

export interface RebuildResult {
  readonly root: string;
  readonly candidates: number;
  readonly ingested: number;
  readonly rejected: number;
  /** Replayed ingestions whose outcome (placed or not, island and cell) differed from the note's. */
  readonly differing: number;
  /** Behaviour models re-applied from the notes; null when the notes record none (older runs), and the replay refitted by itself. */
  readonly refits: number | null;
  readonly elites: number;
  readonly best: { readonly commit: string; readonly fitness: number } | null;
  readonly samplerRestored: boolean;
}

/**
 * Restores an experiment into an empty database from its remote alone: the git notes on its
 * commits (`refs/notes/loreley`) give the identity, the root, every ingested candidate with its
 * metrics and card, the behaviour models the archive applied, and the sampler's last state. The
 * archive is not copied but rebuilt by replaying every ingestion in its original order through the
 * scheduler's own `ingest`, each noted model applied at the point the run applied it (after the
 * same ingestion, before a migration due then) instead of fitted again, so the same elites land in
 * the same cells, CVT included: a commit's descriptor is exact (see embedding/repository-state.ts),
 * and so are the models. Notes of runs that did not record their models replay with refits of
 * their own, which may cut a CVT archive's cells differently.
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
  const { candidates, state, refits } = experimentRecords(notes, experimentId);
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
  const recorded = state?.refits === true || refits.length > 0;
  if (refits.length > 0) progress(`${refits.length} behaviour model(s) noted: re-applied where the run applied them`);
  const pending = [...refits];
  /** The models the run applied after `seq` ingestions and before the next one. */
  const modelsUpTo = (seq: number): StoredProjection[] => {
    const due: RefitRecord[] = [];
    while (pending.length > 0 && pending[0].ingestions <= seq) due.push(pending.shift()!);
    return due.map((refit) => refit.model as unknown as StoredProjection);
  };
  let ingested = 0;
  let rejected = 0;
  let differing = 0;
  let reported = performance.now();
  for (const [index, record] of candidates.entries()) {
    const job = jobs.get(record.job.id);
    if (!job) throw new Error(`job ${record.job.id} was not restored`);
    const seq = record.ingestion.seq ?? index + 1;
    // Models noted before this ingestion's count (a gap: the note of the ingestion they followed was lost) first.
    if (recorded) for (const model of modelsUpTo(seq - 1)) await scheduler.archive.applyProjection(model);
    const outcome = recorded ? await scheduler.archive.ingest(job, { refit: 'none', apply: modelsUpTo(seq) }) : await scheduler.archive.ingest(job);
    if (outcome.status === 'ingested') ingested += 1;
    else rejected += 1;
    const main = outcome.placements.find((placement) => placement.placed) ?? outcome.placements[0];
    const noted = record.ingestion.cell as { island?: number; cell?: number[] } | null;
    const sameCell = !noted?.cell || (noted.island === main?.island && cellKey(noted.cell) === cellKey(main.cell));
    if (outcome.status !== record.ingestion.status || !sameCell) {
      differing += 1;
      logger.warn({ jobId: job.id, noted: { status: record.ingestion.status, cell: noted }, replayed: { status: outcome.status, island: main?.island, cell: main?.cell } }, 'replayed ingestion differs from the note');
    }
    if (performance.now() - reported > 1000 || index === candidates.length - 1) {
      reported = performance.now();
      progress(`replayed ${index + 1}/${candidates.length} ingestions (${ingested} placed, ${rejected} not better)`);
    }
  }

  // What the replay applied came from the notes: not to be noted again.
  await markRefitsNoted(pool, experimentId);
  let samplerRestored = false;
  if (state) {
    await saveSamplerState(pool, experimentId, state.rngState, state.nextIsland);
    samplerRestored = true;
  }
  const best = await scheduler.archive.best();
  const { elites } = await scheduler.archive.coverage();
  return { root, candidates: candidates.length, ingested, rejected, differing, refits: recorded ? refits.length : null, elites, best: best ? { commit: best.commitHash, fitness: best.fitness } : null, samplerRestored };
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
