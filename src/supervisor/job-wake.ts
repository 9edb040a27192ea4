import type { Logger } from '../shared/logger.ts';
import { QueueListener } from '../shared/queue-listener.ts';
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
      // A woken worker that took a job wakes the next, unless its fetch saw no more ready (a job
      // sent alone): the next would only find the queue empty.
      if (view.state === 'busy' && this.policy.becameBusy(view.id, this.now()) && view.moreReady !== false) this.wakeOne();
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

/**
 * The host's LISTEN connection for the experiment's queue (`shared/queue-listener.ts`): each sent
 * job wakes one idle worker, and each (re)connection wakes one, for the notifications missed
 * while it was down.
 */
export class JobWake {
  private readonly logger: Logger;
  private readonly waker: JobWaker;
  private readonly listener: QueueListener;

  constructor(options: { url: string; settings: Settings; logger: Logger; target: WakeTarget }) {
    this.logger = options.logger;
    this.waker = new JobWaker(options.target);
    this.listener = new QueueListener({
      url: options.url,
      settings: options.settings,
      logger: options.logger,
      applicationName: 'loreley-supervisor-listen',
      listeningMessage: 'listening for sent jobs (one LISTEN for the host)',
      onSent: () => {
        const slot = this.waker.wakeOne();
        this.logger.debug({ slot: slot ?? null }, slot ? 'job sent: woke an idle worker' : 'job sent: no idle worker (the busy ones fetch when they finish)');
      },
      // Jobs sent while we were not listening: one wake, which chains on if it finds one.
      onListening: () => void this.waker.wakeOne(),
    });
  }

  /** Connects in the background; failures are retried until `close()`. */
  start(): void {
    this.listener.start();
  }

  async close(): Promise<void> {
    this.logger.info({ wakes: this.waker.counts.wakes, noneIdle: this.waker.counts.noneIdle }, 'stopped listening for sent jobs');
    await this.listener.close();
  }
}
