import os from 'node:os';
import { experimentFinished, hostHeartbeat, listHosts, lockHost, releaseHost, takeHost } from '../shared/db/hosts.ts';
import { createPool, withTransaction, type Pool } from '../shared/db/pool.ts';
import { errorMessage, UserError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { processAlive } from '../shared/process-alive.ts';
import type { Settings } from '../shared/settings/index.ts';

/** How often the supervisor refreshes its host row (and, when asked, checks whether the run ended). */
const HEARTBEAT_MS = 5_000;
/** A host row not refreshed for this long belongs to a dead supervisor and may be taken over. */
export const HOST_STALE_SECONDS = 30;

export interface HostPresenceOptions {
  readonly url: string;
  readonly settings: Settings;
  readonly logger: Logger;
  /** Polls the database for the end of the run and calls `onFinished` once (see `watchFinished`). */
  readonly pollMs?: number;
}

/**
 * The supervisor's claim on its host id (LORELEY_HOST_ID, default the machine's hostname) in the
 * `hosts` table. Process presence is keyed by (host id, slot id), so two live supervisors under
 * one host id would overwrite each other's `scheduler0001`: the second is refused with a one-line
 * error. A row is free when its supervisor stopped, when it has not been refreshed for
 * HOST_STALE_SECONDS by the database's clock, or when its pid is dead on this same machine (a
 * restart right after a SIGKILL need not wait).
 */
export class HostPresence {
  private readonly pool: Pool;
  private readonly experimentId: string;
  private readonly host: string;
  private readonly me: { machine: string; pid: number };
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | undefined;
  private finishedWatch: { check: () => boolean; onFinished: () => void } | undefined;
  private finishedSeen = false;
  private closed = false;

  private constructor(options: HostPresenceOptions) {
    this.pool = createPool({ url: options.url, settings: options.settings.database, applicationName: 'loreley-supervisor-host', max: 1 });
    this.pool.on('error', () => undefined);
    this.experimentId = options.settings.experiment.uuid;
    this.host = options.settings.hostId;
    this.me = { machine: os.hostname(), pid: process.pid };
    this.logger = options.logger;
  }

  static async claim(options: HostPresenceOptions): Promise<HostPresence> {
    const presence = new HostPresence(options);
    try {
      await presence.take(options.settings);
    } catch (error) {
      await presence.pool.end().catch(() => undefined);
      throw error;
    }
    presence.timer = setInterval(() => void presence.beat(), options.pollMs ?? HEARTBEAT_MS);
    presence.timer.unref();
    return presence;
  }

  private async take(settings: Settings): Promise<void> {
    const { supervisor } = settings;
    await withTransaction(this.pool, async (client) => {
      const { row, created } = await lockHost(client, this.experimentId, this.host, this.me);
      const ours = row.machine === this.me.machine && row.pid === this.me.pid;
      const free = created || ours || row.state === 'stopped' || row.ageSeconds > HOST_STALE_SECONDS || (row.machine === this.me.machine && !processAlive(row.pid));
      if (!free) {
        throw new UserError(
          `host id ${this.host} is in use by a live supervisor (pid ${row.pid} on ${row.machine}, seen ${Math.round(row.ageSeconds)} s ago): ` +
            'give each supervisor of an experiment its own LORELEY_HOST_ID (--host-id)',
        );
      }
      await takeHost(client, this.experimentId, this.host, { ...this.me, workers: supervisor.workers, scheduler: supervisor.scheduler });
    });
    this.logger.info({ host: this.host, machine: this.me.machine }, `supervising as host ${this.host}`);
  }

  /**
   * Calls `onFinished` once the database says the run is over (the experiment marked finished, no
   * job unfinished) while `check()` allows it: for a host without an active scheduler of its own,
   * which never hears the scheduler's `done`.
   */
  watchFinished(check: () => boolean, onFinished: () => void): void {
    this.finishedWatch = { check, onFinished };
  }

  private async beat(): Promise<void> {
    if (this.closed) return;
    try {
      const ours = await hostHeartbeat(this.pool, this.experimentId, this.host, this.me);
      if (!ours) this.logger.warn({ host: this.host }, `another supervisor took over host id ${this.host}: are two supervisors sharing it?`);
      const watch = this.finishedWatch;
      if (watch && !this.finishedSeen && watch.check() && (await experimentFinished(this.pool, this.experimentId))) {
        this.finishedSeen = true;
        this.logger.info('the database says the run is finished');
        watch.onFinished();
      }
    } catch (error) {
      this.logger.debug({ err: errorMessage(error) }, 'host heartbeat failed');
    }
  }

  /** Every host row of the experiment (for the status line and tests). */
  hosts(): ReturnType<typeof listHosts> {
    return listHosts(this.pool, this.experimentId);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await releaseHost(this.pool, this.experimentId, this.host, this.me).catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }
}
