import type { Pool } from '../shared/db/pool.ts';
import type { Logger } from '../shared/logger.ts';
import type { PgBoss } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { MapElitesArchive } from './archive/archive.ts';
import type { SchedulerRepository } from './repository.ts';

/**
 * What every scheduler stage works with: one experiment's settings, its database and queue, the
 * scheduler's clone and the archive. Built once by `EvolutionScheduler`; the stages keep no state
 * of their own between ticks (the database is the state).
 */
export interface SchedulerContext {
  readonly settings: Settings;
  readonly experimentId: string;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly logger: Logger;
  readonly repository: SchedulerRepository;
  readonly archive: MapElitesArchive;
  /** The sampler's seed: `MAPELITES_SAMPLER_SEED`, or derived from the experiment id. */
  readonly seed: number;
  /**
   * Before this time (epoch ms) a lapsed queue heartbeat says nothing: right after a database
   * outage every heartbeat looks stale until live workers have had one interval to touch theirs.
   */
  readonly heartbeatsTrustedAfter?: number;
}
