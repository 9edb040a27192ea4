import { listElites, type Elite } from '../../shared/db/archive.ts';
import type { Queryable } from '../../shared/db/pool.ts';

/**
 * The archive's elites held in memory by the scheduler, so a tick does not read the whole archive
 * back (10,000 elites with their cells and descriptors: 30 ms of a 75 ms tick, most of it at load).
 *
 * The scheduler is the archive's only writer while it holds the scheduler lock, and it applies its
 * own writes here after they commit. Everyone else's writes (a rebuild, a standby that took over
 * and then lost the lock again, a fix by hand) are seen through `archive_versions.version`, which
 * a trigger changes with every statement writing `archive_elites` (migration 8): the elites are
 * read again whenever the version stored is not the one held. A write of our own that finds, under
 * the version row's lock, a version other than the one held drops what is held instead of
 * patching it.
 */
export class EliteMirror {
  private readonly experimentId: string;
  /** The stored version the elites held correspond to; undefined: nothing held, read on next use. */
  private version: string | undefined;
  private readonly islands = new Map<number, Map<string, Elite>>();
  /** Per island, in cell key order; rebuilt lazily for the islands that changed. */
  private readonly sorted = new Map<number, Elite[]>();
  /** How often the elites were read from the database (tests and the bench look at it). */
  loads = 0;

  constructor(experimentId: string) {
    this.experimentId = experimentId;
  }

  /**
   * Every elite by island, each island's in cell key order (the sampler's order, so seeded sampling
   * is reproducible). `version` is the stored version, read by the caller: the elites are read
   * (with `db`, in the caller's transaction) only when it differs from the version held. Elites
   * read after the version was are at least as new as it, so a mislabel only costs a second read.
   */
  async byIsland(db: Queryable, version: string | undefined): Promise<ReadonlyMap<number, readonly Elite[]>> {
    if (version === undefined || version !== this.version) await this.load(db, version);
    const out = new Map<number, readonly Elite[]>();
    for (const [island, cells] of this.islands) {
      let list = this.sorted.get(island);
      if (!list) {
        list = [...cells.values()].sort((a, b) => (a.cellKey < b.cellKey ? -1 : a.cellKey > b.cellKey ? 1 : 0));
        this.sorted.set(island, list);
      }
      if (list.length > 0) out.set(island, list);
    }
    return out;
  }

  private async load(db: Queryable, version: string | undefined): Promise<void> {
    const elites = await listElites(db, this.experimentId);
    this.replaceAll(elites);
    this.version = version;
    this.loads += 1;
  }

  private replaceAll(elites: readonly Elite[]): void {
    this.islands.clear();
    this.sorted.clear();
    for (const elite of elites) this.put(elite);
  }

  private put(elite: Elite): void {
    let cells = this.islands.get(elite.island);
    if (!cells) {
      cells = new Map();
      this.islands.set(elite.island, cells);
    }
    cells.set(elite.cellKey, elite);
    this.sorted.delete(elite.island);
  }

  /**
   * After a write of our own committed: `before` is the version its transaction found under the
   * version row's lock, `after` the one it left. If `before` is what was held, the change is applied
   * (`placed` elites put in their cells, or every elite replaced by `all`); otherwise someone else
   * wrote in between and what is held is dropped.
   */
  committed(before: string, after: string, change: { readonly placed?: readonly Elite[]; readonly all?: readonly Elite[] }): void {
    if (this.version !== before) {
      this.version = undefined;
      return;
    }
    if (change.all) this.replaceAll(change.all);
    for (const elite of change.placed ?? []) this.put(elite);
    this.version = after;
  }
}
