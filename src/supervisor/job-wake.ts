import pg from 'pg';
import { Backoff } from '../shared/backoff.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { queueNotifyChannel } from '../shared/queue.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { SlotView } from './supervisor.ts';

/**
 * One LISTEN per host. pg-boss NOTIFYs once per transaction that sends jobs to the queue; were
 * every worker LISTENing, each idle worker's backend would commit a transaction to read each
 * NOTIFY and each worker would then run a fetch that all but one find empty (40 transactions per
 * job with 16 idle workers). Instead the supervisor LISTENs on one small connection and wakes ONE
 * idle worker over IPC per notification; its children's queues do not LISTEN (`CHILD_ENV.wake`)
 * and poll only as a backstop.
 *
 * One transaction may send many jobs (the scheduler's dispatch) yet NOTIFY once, so a woken worker
 * that turns busy (its fetch found a job: there may be more) wakes the next idle one, and so on
 * until a woken worker finds nothing. A job sent while every worker is busy is taken by the first
 * that finishes (a worker fetches again after each job). A wake lost to a dead child or a dropped
 * connection costs at most the workers' backstop poll; the job itself stays queued.
 */

/** The supervisor as the waker sees it: its worker slots, a way to wake one, and their state changes. */
export interface WakeTarget {
  view(): readonly SlotView[];
  /** Sends `wake` to the slot's child; false when it has none ready to take it. */
  wake(slotId: string): boolean;
  on(event: 'change', listener: (view: SlotView) => void): unknown;
}

/** How long after a wake a worker's turning busy counts as "the wake found a job". */
const WAKE_WINDOW_MS = 2000;

/**
 * Which idle worker to wake, and whether a worker turning busy should wake the next. Pure: the
 * caller passes the time. Round-robin by least recently woken, so back-to-back wakes (before the
 * first woken worker has said it is busy) go to different workers.
 */
export class WakePolicy {
  private readonly lastWoken = new Map<string, number>();
  private readonly pending = new Map<string, number>();
  private readonly windowMs: number;

  constructor(windowMs = WAKE_WINDOW_MS) {
    this.windowMs = windowMs;
  }

  /** The idle worker woken longest ago (never woken first, then in the given order); undefined when none. */
  pick(idle: readonly string[]): string | undefined {
    let best: string | undefined;
    let bestAt = Infinity;
    for (const id of idle) {
      const at = this.lastWoken.get(id) ?? -Infinity;
      if (at < bestAt) {
        best = id;
        bestAt = at;
      }
    }
    return best;
  }

  woken(id: string, now: number): void {
    this.lastWoken.set(id, now);
    this.pending.set(id, now);
  }

  /** `id` turned busy: true when a wake of ours within the window did it (so wake the next). */
  becameBusy(id: string, now: number): boolean {
    const at = this.pending.get(id);
    this.pending.delete(id);
    return at !== undefined && now - at <= this.windowMs;
  }
}

/** Wakes one idle worker of `target` at a time, following `WakePolicy`. */
export class JobWaker {
  private readonly target: WakeTarget;
  private readonly policy: WakePolicy;
  private readonly now: () => number;
  /** Wakes sent, and how many found no idle worker (every worker busy: they fetch when they finish). */
  readonly counts = { wakes: 0, noneIdle: 0 };
  /**
   * A send found no idle worker. A busy one fetches again when it finishes anyway, but a worker
   * that was starting did its first fetch before it said it was idle: the next worker to turn
   * idle is woken once, so a job sent in that window does not wait for the backstop poll.
   */
  private missed = false;

  constructor(target: WakeTarget, options: { policy?: WakePolicy; now?: () => number } = {}) {
    this.target = target;
    this.policy = options.policy ?? new WakePolicy();
    this.now = options.now ?? (() => performance.now());
    target.on('change', (view) => {
      if (view.role !== 'worker') return;
      if (view.state === 'busy' && this.policy.becameBusy(view.id, this.now())) this.wakeOne();
      else if (view.state === 'idle' && this.missed) {
        this.missed = false;
        if (this.target.wake(view.id)) this.policy.woken(view.id, this.now());
      }
    });
  }

  /** Wakes one idle worker and gives its slot id; undefined when none is idle (or none took the message). */
  wakeOne(): string | undefined {
    const idle = this.target.view().filter((slot) => slot.role === 'worker' && slot.state === 'idle').map((slot) => slot.id);
    while (idle.length > 0) {
      const id = this.policy.pick(idle)!;
      if (this.target.wake(id)) {
        this.policy.woken(id, this.now());
        this.counts.wakes += 1;
        return id;
      }
      idle.splice(idle.indexOf(id), 1);
    }
    this.counts.noneIdle += 1;
    this.missed = true;
    return undefined;
  }
}

/** How often the LISTEN connection is checked (a silently dropped connection would hear nothing). */
const CHECK_INTERVAL_MS = 30_000;
const CHECK_TIMEOUT_MS = 10_000;

/**
 * The host's LISTEN connection for the experiment's queue: one `pg.Client`, reconnected with the
 * capped backoff of `shared/backoff.ts` when the database goes away or the connection stops
 * answering its periodic check. Each (re)connection wakes one worker, for the notifications missed
 * while it was down.
 */
export class JobWake {
  private readonly url: string;
  private readonly queue: string;
  private readonly channel: string;
  private readonly logger: Logger;
  private readonly waker: JobWaker;
  private readonly backoff = new Backoff();
  private client: pg.Client | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private listening = false;

  constructor(options: { url: string; settings: Settings; logger: Logger; target: WakeTarget }) {
    this.url = options.url;
    this.queue = options.settings.queue.name;
    this.channel = queueNotifyChannel(options.settings.database.bossSchema);
    this.logger = options.logger;
    this.waker = new JobWaker(options.target);
  }

  /** Connects in the background; failures are retried until `close()`. */
  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retryTimer = undefined;
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.url, application_name: 'loreley-supervisor-listen', keepAlive: true });
    this.client = client;
    client.on('error', (error) => this.drop(client, error));
    client.on('end', () => this.drop(client, new Error('the LISTEN connection ended')));
    client.on('notification', (message) => {
      if (message.channel !== this.channel || message.payload !== this.queue) return;
      const slot = this.waker.wakeOne();
      this.logger.debug({ slot: slot ?? null }, slot ? 'job sent: woke an idle worker' : 'job sent: no idle worker (the busy ones fetch when they finish)');
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (error) {
      this.drop(client, error);
      return;
    }
    if (this.client !== client) return;
    const again = this.backoff.failures > 0;
    this.backoff.reset();
    this.listening = true;
    this.logger.info({ channel: this.channel, queue: this.queue }, again ? 'listening for sent jobs again' : 'listening for sent jobs (one LISTEN for the host)');
    this.scheduleCheck(client);
    // Jobs sent while we were not listening: one wake, which chains on if it finds one.
    this.waker.wakeOne();
  }

  private scheduleCheck(client: pg.Client): void {
    this.checkTimer = setTimeout(() => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the LISTEN connection did not answer within ${CHECK_TIMEOUT_MS / 1000} s`)), CHECK_TIMEOUT_MS);
      });
      // pg-boss's own check: the connection answers, and still LISTENs (a pooler could drop it).
      const check = client.query<{ listening: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_listening_channels() AS c WHERE c = $1) AS listening', [this.channel]);
      Promise.race([check, timeout])
        .then(({ rows }) => {
          if (!rows[0]?.listening) throw new Error('the LISTEN registration was lost');
          if (this.client === client) this.scheduleCheck(client);
        })
        .catch((error: unknown) => this.drop(client, error))
        .finally(() => clearTimeout(timer));
    }, CHECK_INTERVAL_MS);
    this.checkTimer.unref();
  }

  /** Forgets `client` (once) and, unless closing, connects again after the backoff. */
  private drop(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    clearTimeout(this.checkTimer);
    client.removeAllListeners('notification');
    client.removeAllListeners('end');
    // A late socket error on the dropped client must not go unhandled.
    client.removeAllListeners('error');
    client.on('error', () => undefined);
    client.end().catch(() => undefined);
    if (this.closed) return;
    const wasListening = this.listening;
    this.listening = false;
    const retryInMs = this.backoff.next();
    const line = { error: errorMessage(error), retryInMs, failedTries: this.backoff.failures };
    if (wasListening) this.logger.warn(line, 'lost the LISTEN connection: workers poll until it is back');
    else this.logger.warn(line, 'cannot LISTEN for sent jobs yet: workers poll until it works');
    this.retryTimer = setTimeout(() => void this.connect(), retryInMs);
    this.retryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.logger.info({ wakes: this.waker.counts.wakes, noneIdle: this.waker.counts.noneIdle }, 'stopped listening for sent jobs');
    clearTimeout(this.retryTimer);
    clearTimeout(this.checkTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    await client.end().catch(() => undefined);
  }
}
