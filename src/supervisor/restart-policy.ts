/**
 * When to restart a crashed child and when to give up on its slot. Pure: it is told the clock,
 * so the policy can be read and tested apart from processes.
 *
 * Two kinds of death are told apart. A crash (the child exited on its own, or the supervisor's
 * watchdog killed it) always counts towards the crash loop. A kill from outside (SIGKILL from an
 * operator, the OOM killer, a chaos test) says nothing about the child's health when the child had
 * been up for a while: like pm2's `min_uptime`, it counts only when the child also died young,
 * before `minUptimeMs`. A healthy slot that is killed from outside is therefore never errored,
 * while a child that is killed again and again while starting still is.
 */

export interface RestartPolicySettings {
  readonly initialMs: number;
  readonly maxMs: number;
  /** A child that ran this long before crashing starts again from `initialMs`. */
  readonly resetAfterMs: number;
  /** More crashes than this within `windowMs` mark the slot errored. */
  readonly maxCrashes: number;
  readonly windowMs: number;
  /** A child killed from outside after running this long is restarted without counting a crash (default 0: every death counts). */
  readonly minUptimeMs?: number;
}

export type RestartDecision =
  | { readonly action: 'restart'; readonly delayMs: number; readonly counted?: false }
  | { readonly action: 'give-up'; readonly crashes: number };

export interface DeathInfo {
  /** Killed by a signal the child did not send itself and the supervisor did not send (SIGKILL, SIGTERM, …). */
  readonly external?: boolean;
}

export class RestartPolicy {
  private readonly settings: RestartPolicySettings;
  private crashes: number[] = [];
  private nextDelayMs: number;

  constructor(settings: RestartPolicySettings) {
    this.settings = settings;
    this.nextDelayMs = settings.initialMs;
  }

  /** A child of this slot died after running `uptimeMs`. */
  onCrash(now: number, uptimeMs: number, death: DeathInfo = {}): RestartDecision {
    const { initialMs, maxMs, resetAfterMs, maxCrashes, windowMs } = this.settings;
    const minUptimeMs = this.settings.minUptimeMs ?? 0;
    if (uptimeMs >= resetAfterMs) this.nextDelayMs = initialMs;
    if (death.external && minUptimeMs > 0 && uptimeMs >= minUptimeMs) {
      // Not the child's fault: restart after the current delay, without counting or backing off.
      return { action: 'restart', delayMs: this.nextDelayMs, counted: false };
    }
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
