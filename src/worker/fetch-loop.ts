/**
 * A worker's fetch loop, in place of pg-boss's `work()`: `concurrency` slots, each taking one job
 * at a time. A slot that finished a job takes the next at once (a backlog drains without waiting
 * for a poll); one that found the queue empty sleeps until woken (a NOTIFY it heard, or the
 * supervisor's `wake`) or until the poll interval passed, the backstop for a lost wake. A failed
 * take (the database away) is reported and retried after the poll interval, not in a hot loop.
 */
export interface FetchLoopOptions<T> {
  readonly concurrency: number;
  /** Milliseconds an idle slot sleeps between fetches when nobody wakes it (read before each sleep). */
  pollMs(): number;
  /** Takes the next job, or nothing when the queue has none ready. */
  take(): Promise<T | undefined>;
  /**
   * Runs a taken job to its end. Gives the next job when it took one on the way (in the
   * transaction that stored the result), which the slot then runs at once; `'empty'` when it
   * looked and the queue had nothing (the slot sleeps unless woken meanwhile); nothing when it did
   * not look (the slot fetches at once). A rejection is reported like a failed take.
   */
  handle(taken: T): Promise<T | 'empty' | undefined>;
  onError(error: unknown): void;
}

/** One slot's state: woken since its last fetch began (a wake during a fetch is not lost), and how to end its sleep. */
interface Slot {
  woken: boolean;
  wakeUp?: () => void;
}

export class FetchLoop<T> {
  private readonly options: FetchLoopOptions<T>;
  private readonly slots: Slot[] = [];
  private readonly running: Promise<void>[] = [];
  private stopped = false;

  constructor(options: FetchLoopOptions<T>) {
    this.options = options;
  }

  start(): void {
    for (let i = 0; i < this.options.concurrency; i += 1) {
      const slot: Slot = { woken: false };
      this.slots.push(slot);
      this.running.push(this.run(slot));
    }
  }

  /** Makes every slot that is not busy with a job fetch now (a job was sent). */
  wake(): void {
    if (this.stopped) return;
    for (const slot of this.slots) {
      slot.woken = true;
      slot.wakeUp?.();
    }
  }

  /** Stops taking jobs; resolves once every slot has left its loop (a job in hand ends first). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const slot of this.slots) slot.wakeUp?.();
    await Promise.all(this.running);
  }

  private async run(slot: Slot): Promise<void> {
    while (!this.stopped) {
      slot.woken = false;
      let taken: T | undefined;
      try {
        taken = await this.options.take();
      } catch (error) {
        this.options.onError(error);
        await this.sleep(slot);
        continue;
      }
      if (taken !== undefined) {
        let next: T | 'empty' | undefined = taken;
        while (next !== undefined && next !== 'empty') {
          next = await this.options.handle(next).catch((error: unknown) => {
            this.options.onError(error);
            return undefined;
          });
        }
        if (next === undefined || slot.woken) continue;
      }
      if (!slot.woken) await this.sleep(slot);
    }
  }

  /** Sleeps out the poll interval, or until `wake()` or `stop()`. */
  private async sleep(slot: Slot): Promise<void> {
    if (this.stopped) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => slot.wakeUp!(), this.options.pollMs());
      slot.wakeUp = () => {
        clearTimeout(timer);
        slot.wakeUp = undefined;
        resolve();
      };
    });
  }
}
