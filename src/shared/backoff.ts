/**
 * Capped exponential backoff with jitter, for reconnecting to a database that went away. Pure: the
 * caller supplies the random source, so a test can pin every delay.
 *
 * Each delay is drawn from [base/2, base] ("equal jitter"), where base doubles from `initialMs` up
 * to `maxMs`: processes that lost the same server do not all knock at the same instant when it
 * comes back, and none waits longer than `maxMs`.
 */

export interface BackoffSettings {
  readonly initialMs: number;
  readonly maxMs: number;
}

export const RECONNECT_BACKOFF: BackoffSettings = { initialMs: 250, maxMs: 5000 };

export class Backoff {
  private readonly settings: BackoffSettings;
  private readonly random: () => number;
  private attempt = 0;

  constructor(settings: BackoffSettings = RECONNECT_BACKOFF, random: () => number = Math.random) {
    if (!(settings.initialMs >= 0) || !(settings.maxMs >= settings.initialMs)) {
      throw new RangeError(`backoff needs 0 <= initialMs <= maxMs (got ${settings.initialMs}, ${settings.maxMs})`);
    }
    this.settings = settings;
    this.random = random;
  }

  /** The delay before the next try; each call counts one more failure. */
  next(): number {
    const { initialMs, maxMs } = this.settings;
    const base = Math.min(maxMs, initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(base / 2 + (base / 2) * this.random());
  }

  /** Failures so far since the last success. */
  get failures(): number {
    return this.attempt;
  }

  /** A success: the next failure starts from `initialMs` again. */
  reset(): void {
    this.attempt = 0;
  }
}
