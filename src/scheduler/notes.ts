import { getArchiveState } from '../shared/db/archive.ts';
import { databaseNow, listUnnoted, listUnnotedRefits, markNoted, markRefitsNoted, type UnnotedCandidate } from '../shared/db/notes.ts';
import { errorMessage } from '../shared/errors.ts';
import { fetchNotes, missingCommits, pushNotes, readNotes, writeNotes } from '../shared/notes.ts';
import type { SchedulerContext } from './context.ts';
import { experimentRecords, mergeNote, NOTE_VERSION, type CandidateRecord, type RefitRecord, type StateRecord } from './notes-record.ts';

/** Notes written per tick at most; a backlog (a long push outage) drains over the next ticks. */
const NOTES_PER_TICK = 500;
/** Refit records (tens of KB each) per tick at most. */
const REFITS_PER_TICK = 20;

export interface NotesResult {
  readonly noted: number;
  readonly pushed: boolean;
}

/**
 * After every tick: the candidates ingested since the last tick, the behaviour models the archive
 * applied (refits), and the sampler's state, go into git notes on their commits (`refs/notes/loreley`) and are pushed to the remote: one `fast-import` and
 * one push per tick, whatever the number of jobs, and nothing on the workers' path. The scheduler
 * is the only writer while it holds its lock; notes a predecessor wrote are fetched and merged
 * first. A job is marked noted only once its note is pushed (or written, when WORKER_REPO_PUSH is
 * off), so a failed push is tried again next tick.
 */
export class NotesPublisher {
  private merged = false;
  private lastState: string | undefined;

  private readonly context: SchedulerContext;
  private readonly root: () => string;

  constructor(context: SchedulerContext, root: () => string) {
    this.context = context;
    this.root = root;
  }

  async publish(): Promise<NotesResult> {
    const { pool, experimentId, settings, repository, logger } = this.context;
    let candidates = await listUnnoted(pool, experimentId, NOTES_PER_TICK);
    let refits = await listUnnotedRefits(pool, experimentId, REFITS_PER_TICK);
    const archiveState = await getArchiveState(pool, experimentId);
    const stateKey = archiveState ? `${archiveState.ingestions}:${archiveState.rngState}:${archiveState.nextIsland}` : undefined;
    if (candidates.length === 0 && refits.length === 0 && stateKey === this.lastState) return { noted: 0, pushed: false };

    const directory = repository.directory;
    const push = settings.repository.push;
    if (!this.merged && push) {
      await fetchNotes(directory);
      this.merged = true;
    }
    const root = this.root();
    const lines = new Map<string, string[]>();
    const add = (commit: string, line: string) => lines.set(commit, [...(lines.get(commit) ?? []), line]);
    for (const candidate of candidates) add(candidate.resultCommit ?? candidate.baseCommit, JSON.stringify(candidateRecord(experimentId, candidate)));
    for (const refit of refits) {
      const record: RefitRecord = { v: NOTE_VERSION, type: 'refit', experiment: experimentId, ingestions: refit.ingestions, order: Number(refit.id), model: refit.model };
      add(refit.commit ?? root, JSON.stringify(record));
    }
    let stateLine: string | undefined;
    if (archiveState) {
      const state: StateRecord = {
        v: NOTE_VERSION, type: 'state', experiment: experimentId, slug: settings.experiment.raw, namespace: settings.experiment.namespace,
        repository: settings.repository.remoteUrl, branch: settings.repository.branch, root,
        at: (await databaseNow(pool)).toISOString(), ingestions: archiveState.ingestions, rngState: Number(archiveState.rngState), nextIsland: archiveState.nextIsland,
        refits: true,
      };
      stateLine = JSON.stringify(state);
      add(root, stateLine);
    }
    // A note needs its commit here: fetch what workers pushed since (the metrics descriptor never
    // reads commits); a commit that cannot be had is left for a later tick.
    const missing = await missingCommits(directory, [...lines.keys()]);
    if (missing.length > 0) {
      for (const commit of missing) await repository.ensureCommit(commit).catch(() => undefined);
      for (const commit of await missingCommits(directory, missing)) {
        lines.delete(commit);
        candidates = candidates.filter((candidate) => (candidate.resultCommit ?? candidate.baseCommit) !== commit);
        refits = refits.filter((refit) => (refit.commit ?? root) !== commit);
        logger.warn({ commit }, 'commit not found in the scheduler clone: its git note waits for the next tick');
      }
    }
    const existing = await readNotes(directory, new Set(lines.keys()));
    const notes = new Map<string, string>();
    for (const [commit, added] of lines) {
      // The root keeps one state line per experiment: the newest replaces the older ones.
      notes.set(commit, mergeNote(existing.get(commit), added, (record) => commit === root && record.type === 'state' && record.experiment === experimentId && stateLine !== undefined));
    }
    await writeNotes(directory, notes, `loreley: ${candidates.length} candidate(s) of ${settings.experiment.namespace}`);
    let pushed = false;
    if (push) {
      await pushNotes(directory);
      pushed = true;
    }
    await markNoted(pool, candidates.map((candidate) => candidate.jobId));
    await markRefitsNoted(pool, experimentId, refits.map((refit) => refit.id));
    this.lastState = stateKey;
    if (candidates.length > 0) logger.info({ noted: candidates.length, pushed }, 'git notes written');
    return { noted: candidates.length, pushed };
  }
}

function iso(value: Date | null): string | null {
  return value ? new Date(value).toISOString() : null;
}

export function candidateRecord(experimentId: string, c: UnnotedCandidate): CandidateRecord {
  return {
    v: NOTE_VERSION,
    type: 'candidate',
    experiment: experimentId,
    commit: c.resultCommit ?? c.baseCommit,
    job: {
      id: c.jobId, kind: c.kind, base: c.baseCommit, inspirations: c.inspirations, goal: c.goal, payload: c.payload, island: c.island,
      priority: c.priority, attempts: c.attempts, worker: c.workerId, host: c.workerHost,
      createdAt: new Date(c.createdAt).toISOString(), startedAt: iso(c.startedAt), finishedAt: iso(c.finishedAt),
    },
    card: c.card
      ? { parent: c.card.parentCommit, branch: c.card.branch, author: c.card.author, message: c.card.message, summary: c.card.summary, changedFiles: c.card.changedFiles }
      : null,
    metrics: c.metrics,
    ingestion: { seq: c.ingestionSeq, status: c.ingestionStatus, delta: c.ingestionDelta, cell: c.ingestionCell, reason: c.ingestionReason, at: iso(c.ingestedAt) },
  };
}

/**
 * How many candidates of this experiment the remote's notes hold (0 when none): a first start on
 * an empty database must not begin the experiment again over a record `loreley rebuild` can restore.
 */
export async function notedCandidatesOnRemote(directory: string, experimentId: string): Promise<number> {
  try {
    if (!(await fetchNotes(directory))) return 0;
  } catch (error) {
    throw new Error(`cannot read the remote's git notes: ${errorMessage(error)}`);
  }
  return experimentRecords(await readNotes(directory), experimentId).candidates.length;
}
