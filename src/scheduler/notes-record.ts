import type { MetricValue } from '../shared/db/results.ts';
import { noteLines } from '../shared/notes.ts';

/**
 * What Loreley's git notes say, one JSON record per line (see src/shared/notes.ts for why lines).
 * Every record names its experiment, because one remote (and one root commit) can serve several.
 *
 * - `candidate`, on the candidate's commit (the baseline's is the root): the job, its commit card,
 *   its metrics and where ingestion put it, with `ingestion.seq`, the archive's ingestion count,
 *   which orders the replay of a rebuild.
 * - `state`, on the root: the experiment's identity and the sampler's state at a moment (`at`, the
 *   database's clock); a rebuild takes the latest. `refits: true` says the run notes its refits
 *   (older notes lack it, and their rebuild refits by itself).
 * - `refit`, on the commit of the ingestion it followed (the root when none): a behaviour model
 *   the archive applied after `ingestions` ingestions (the PCA projection with the CVT centroids),
 *   so a rebuild applies the same model at the same point instead of fitting its own.
 */

export const NOTE_VERSION = 1;

export interface CandidateRecord {
  readonly v: number;
  readonly type: 'candidate';
  readonly experiment: string;
  readonly commit: string;
  readonly job: {
    readonly id: string;
    readonly kind: string;
    readonly base: string;
    readonly inspirations: string[];
    readonly goal: string | null;
    readonly payload: Record<string, unknown>;
    readonly island: number;
    readonly priority: number;
    readonly attempts: number;
    readonly worker: string | null;
    readonly host: string | null;
    readonly createdAt: string;
    readonly startedAt: string | null;
    readonly finishedAt: string | null;
  };
  readonly card: {
    readonly parent: string | null;
    readonly branch: string | null;
    readonly author: string | null;
    readonly message: string;
    readonly summary: string;
    readonly changedFiles: string[];
  } | null;
  readonly metrics: MetricValue[];
  readonly ingestion: {
    readonly seq: number | null;
    readonly status: 'ingested' | 'rejected';
    readonly delta: number | null;
    readonly cell: unknown;
    readonly reason: string | null;
    readonly at: string | null;
  };
}

export interface StateRecord {
  readonly v: number;
  readonly type: 'state';
  readonly experiment: string;
  readonly slug: string;
  readonly namespace: string;
  readonly repository: string;
  readonly branch: string;
  readonly root: string;
  readonly at: string;
  readonly ingestions: number;
  readonly rngState: number;
  readonly nextIsland: number;
  readonly refits?: boolean;
}

export interface RefitRecord {
  readonly v: number;
  readonly type: 'refit';
  readonly experiment: string;
  /** Applied after this many ingestions, before the next one (and before a migration due then). */
  readonly ingestions: number;
  /** Orders models applied at the same count. */
  readonly order: number;
  readonly model: Record<string, unknown>;
}

export type NoteRecord = CandidateRecord | StateRecord | RefitRecord;

const RECORD_TYPES: ReadonlySet<unknown> = new Set(['candidate', 'state', 'refit']);

/** Parses a note's lines; lines that are not Loreley records (or of a newer version) are skipped. */
export function parseNote(text: string | undefined): NoteRecord[] {
  const records: NoteRecord[] = [];
  for (const line of noteLines(text)) {
    try {
      const value = JSON.parse(line) as Partial<NoteRecord>;
      if (value && typeof value === 'object' && value.v === NOTE_VERSION && RECORD_TYPES.has(value.type) && typeof value.experiment === 'string') {
        records.push(value as NoteRecord);
      }
    } catch {
      // Someone else's note line: not ours to read.
    }
  }
  return records;
}

/** A note's text with `add` merged in: a union of lines, sorted like `cat_sort_uniq` leaves them. */
export function mergeNote(existing: string | undefined, add: readonly string[], drop: (record: NoteRecord) => boolean = () => false): string {
  const kept = noteLines(existing).filter((line) => {
    const [record] = parseNote(line);
    return !record || !drop(record);
  });
  return `${[...new Set([...kept, ...add])].sort().join('\n')}\n`;
}

export interface ExperimentRecords {
  /** One per job, in ingestion order. */
  readonly candidates: CandidateRecord[];
  /** The latest state record, if any. */
  readonly state: StateRecord | undefined;
  /** Every applied model, in the order the run applied them. */
  readonly refits: RefitRecord[];
}

/** Picks one experiment's records out of every note. */
export function experimentRecords(notes: ReadonlyMap<string, string>, experimentId: string): ExperimentRecords {
  const byJob = new Map<string, CandidateRecord>();
  let state: StateRecord | undefined;
  const refits = new Map<string, RefitRecord>();
  for (const text of notes.values()) {
    for (const record of parseNote(text)) {
      if (record.experiment !== experimentId) continue;
      if (record.type === 'refit') {
        refits.set(`${record.ingestions}:${record.order}`, record);
      } else if (record.type === 'state') {
        if (!state || record.at > state.at || (record.at === state.at && record.ingestions > state.ingestions)) state = record;
      } else {
        const seen = byJob.get(record.job.id);
        if (!seen || (record.ingestion.seq ?? -1) > (seen.ingestion.seq ?? -1)) byJob.set(record.job.id, record);
      }
    }
  }
  const candidates = [...byJob.values()].sort((a, b) => (a.ingestion.seq ?? 0) - (b.ingestion.seq ?? 0) || (a.ingestion.at ?? '').localeCompare(b.ingestion.at ?? '') || a.job.id.localeCompare(b.job.id));
  const ordered = [...refits.values()].sort((a, b) => a.ingestions - b.ingestions || a.order - b.order);
  return { candidates, state, refits: ordered };
}
