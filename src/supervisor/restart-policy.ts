/**
 * When to restart a crashed child and when to give up on its slot. Pure: it is told the clock,
 * so the policy can be read and tested apart from processes.
 */

export interface RestartPolicySettings {
  readonly initialMs: number;
  readonly maxMs: number;
  /** A child that ran this long before crashing starts again from `initialMs`. */
  readonly resetAfterMs: number;
  /** More crashes than this within `windowMs` mark the slot errored. */
  readonly maxCrashes: number;
  readonly windowMs: number;
}

export type RestartDecision = { readonly action: 'restart'; readonly delayMs: number } | { readonly action: 'give-up'; readonly crashes: number };

export class RestartPolicy {
  private readonly settings: RestartPolicySettings;
  private crashes: number[] = [];
  private nextDelayMs: number;

  constructor(settings: RestartPolicySettings) {
    this.settings = settings;
    this.nextDelayMs = settings.initialMs;
  }

  /** A child of this slot died after running `uptimeMs`. */
  onCrash(now: number, uptimeMs: number): RestartDecision {
    const { initialMs, maxMs, resetAfterMs, maxCrashes, windowMs } = this.settings;
    if (uptimeMs >= resetAfterMs) this.nextDelayMs = initialMs;
    this.crashes = [...this.crashes.filter((at) => now - at < windowMs), now];
    if (this.crashes.length > maxCrashes) return { action: 'give-up', crashes: this.crashes.length };
    const delayMs = this.nextDelayMs;
    this.nextDelayMs = Math.min(maxMs, Math.max(1, this.nextDelayMs) * 2);
    return { action: 'restart', delayMs };
  }

  recentCrashes(now: number): number {
    return this.crashes.filter((at) => now - at < this.settings.windowMs).length;
  }
}
