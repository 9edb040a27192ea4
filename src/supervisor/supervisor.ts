import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { CHILD_ENV, EXIT_CONFIG, isLoreleyMessage, type ChildMessage, type ChildState, type HeldJob, type SupervisorMessage } from '../shared/ipc.ts';
import type { Logger } from '../shared/logger.ts';
import type { SupervisorSettings } from '../shared/settings/index.ts';
import { RestartPolicy } from './restart-policy.ts';

/**
 * Keeps N worker children and one scheduler child alive with `node:cluster`. Each slot has a
 * stable id (`worker0001`, `scheduler0001`) that a restarted child keeps. Process plumbing only:
 * what a child does is the child's business.
 */

export type SlotRole = 'worker' | 'scheduler';
export type SlotState = ChildState | 'backoff' | 'errored' | 'exited';

export interface SlotView {
  readonly id: string;
  readonly role: SlotRole;
  readonly state: SlotState;
  readonly pid: number | undefined;
  readonly restarts: number;
  readonly jobId: string | null;
  readonly rssBytes: number | undefined;
  /** Busy: whether its last fetch left more jobs ready (absent: not known). */
  readonly moreReady?: boolean;
}

interface Slot {
  readonly id: string;
  readonly role: SlotRole;
  readonly policy: RestartPolicy;
  state: SlotState;
  child: ClusterWorker | undefined;
  startedAt: number;
  lastHeartbeat: number;
  restarts: number;
  jobId: string | null;
  rssBytes: number | undefined;
  /** As last reported with a `busy` state (see `SlotView.moreReady`). */
  moreReady?: boolean;
  restartTimer: NodeJS.Timeout | undefined;
  /** Set when we killed it for not answering, so the exit is logged as such. */
  killedAsUnresponsive: boolean;
  /** The child's agent/evaluator process groups, as last reported. */
  commandGroups: readonly number[];
  /** The queue jobs the child holds, as last reported: handed back at once if it dies. */
  heldJobs: readonly HeldJob[];
  /** The last child's pid, kept after it died for the `workers` row. */
  lastPid: number;
  /** The current child has reported ready since it was forked. */
  ready: boolean;
  /** During a reload: the replacement child, starting beside the current one. */
  next: ClusterWorker | undefined;
}

/** What the supervisor does with the jobs of a child that died holding them, and where it records dead slots. */
export interface LostJobHandler {
  handBack(slot: string, jobs: readonly HeldJob[], reason: string): void;
  recordSlot?(slot: { workerId: string; role: string; pid: number; state: 'dead' | 'errored'; stillValid: () => boolean }): void;
}

/** A child replaced by a reload, draining: what it last reported, in case it dies holding it. */
interface Retiring {
  readonly child: ClusterWorker;
  readonly exited: () => void;
  commandGroups: readonly number[];
  heldJobs: readonly HeldJob[];
}

export interface SupervisorOptions {
  readonly settings: SupervisorSettings;
  readonly logger: Logger;
  /** The module each child runs (`src/cli/child.ts`). */
  readonly childModule: string;
  /**
   * Environment every child is forked with, merged over the supervisor's own; a key set to
   * undefined is left out (credentials: they travel in the settings message instead).
   */
  readonly childEnv: Record<string, string | undefined>;
  /** The settings message answering a child's `want-settings`: whatever is current when it asks. */
  readonly childSettings: () => Extract<SupervisorMessage, { loreley: 'settings' }>;
  readonly workers: number;
  readonly scheduler: boolean;
  /** Hands a dead child's jobs back to the queue (absent: left to the scheduler's reconciliation). */
  readonly lostJobs?: LostJobHandler;
}

export interface SupervisorEvents {
  change: [SlotView];
  done: [Record<string, unknown>];
  /** Every slot that should be running has a child that reported ready (again after a reload). */
  'all-ready': [];
  /** The first stop request: children are being drained. */
  stopping: [string];
}

export function slotId(prefix: string, index: number): string {
  return `${prefix}${String(index).padStart(4, '0')}`;
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private options: SupervisorOptions;
  private readonly logger: Logger;
  private readonly slots: Slot[] = [];
  private readonly byChild = new Map<number, Slot>();
  /** Children replaced by a reload, draining; by cluster id, with what to call when they exit. */
  private readonly retiring = new Map<number, Retiring>();
  /** Waiters for a replacement child's first `ready` (true) or its exit (false), by cluster id. */
  private readonly incoming = new Map<number, (ready: boolean) => void>();
  private allReady = false;
  /** A worker started ahead, code loaded, waiting for the slot of the next worker that dies. */
  private spare: { readonly child: ClusterWorker; ready: boolean; readonly onMessage: (message: unknown) => void } | undefined;
  private spareTimer: NodeJS.Timeout | undefined;
  /** Spares that died before they were used, in a row: after a few, no more are made. */
  private spareFailures = 0;
  /** Spares sent away (a reload, a stop) that have not exited yet. */
  private readonly discardedSpares = new Map<number, ClusterWorker>();
  private stopping = false;
  private stopReason = '';
  private fatal = false;
  private watchdog: NodeJS.Timeout | undefined;
  private hardDeadline: NodeJS.Timeout | undefined;
  private resolveStopped!: (code: number) => void;
  /** Resolves with the exit code once every child has exited after a stop. */
  readonly stopped: Promise<number>;

  constructor(options: SupervisorOptions) {
    super();
    this.options = options;
    this.logger = options.logger;
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    const s = options.settings;
    const policy = () =>
      new RestartPolicy({
        initialMs: s.restartBackoffInitialMs,
        maxMs: s.restartBackoffMaxMs,
        resetAfterMs: s.restartResetAfterSeconds * 1000,
        maxCrashes: s.crashLoopMaxRestarts,
        windowMs: s.crashLoopWindowSeconds * 1000,
        minUptimeMs: s.minUptimeSeconds * 1000,
      });
    const make = (id: string, role: SlotRole): Slot => ({
      id, role, policy: policy(), state: 'exited', child: undefined, startedAt: 0, lastHeartbeat: 0, restarts: 0,
      jobId: null, rssBytes: undefined, restartTimer: undefined, killedAsUnresponsive: false, commandGroups: [], heldJobs: [], lastPid: 0, ready: false, next: undefined,
    });
    for (let index = 1; index <= options.workers; index += 1) this.slots.push(make(slotId(s.workerIdPrefix, index), 'worker'));
    if (options.scheduler) this.slots.push(make(slotId(s.schedulerIdPrefix, 1), 'scheduler'));
  }

  start(): void {
    cluster.setupPrimary({ exec: this.options.childModule, args: [], silent: false });
    cluster.on('exit', (child, code, signal) => this.onExit(child, code, signal));
    for (const slot of this.slots) this.fork(slot);
    this.watchdog = setInterval(() => this.checkHeartbeats(), Math.max(50, Math.min(this.options.settings.heartbeatIntervalMs, 1000)));
    this.logger.info({ workers: this.options.workers, scheduler: this.options.scheduler, slots: this.slots.map((s) => s.id) }, 'supervisor started');
  }

  view(): SlotView[] {
    return this.slots.map((slot) => ({
      id: slot.id, role: slot.role, state: slot.state, pid: slot.child?.process.pid, restarts: slot.restarts, jobId: slot.jobId, rssBytes: slot.rssBytes, moreReady: slot.moreReady,
    }));
  }

  private setState(slot: Slot, state: SlotState, jobId: string | null = slot.jobId): void {
    if (slot.state === state && slot.jobId === jobId) return;
    slot.state = state;
    slot.jobId = jobId;
    const view = this.view().find((v) => v.id === slot.id)!;
    this.logger.info({ slot: slot.id, state, childPid: view.pid, jobId: jobId ?? undefined, restarts: slot.restarts }, 'child state');
    this.emit('change', view);
    // A dead child cannot tell `loreley status`; the supervisor does, unless it is stopping them all.
    if ((state === 'backoff' || state === 'errored') && !this.stopping) {
      this.options.lostJobs?.recordSlot?.({
        workerId: slot.id,
        role: slot.role,
        pid: slot.lastPid,
        state: state === 'errored' ? 'errored' : 'dead',
        stillValid: () => slot.state === state,
      });
    }
  }

  private forkChild(slot: Slot): ClusterWorker {
    const child = cluster.fork({
      ...this.options.childEnv,
      [CHILD_ENV.workerId]: slot.id,
      [CHILD_ENV.role]: slot.role,
      [CHILD_ENV.supervised]: '1',
    });
    this.byChild.set(child.id, slot);
    child.on('message', (message: unknown) => this.onMessage(slot, child, message));
    // A child whose IPC channel errors is dealt with by its exit; the error must not crash us.
    child.on('error', (error) => this.logger.warn({ slot: slot.id, err: error }, 'child channel error'));
    return child;
  }

  private fork(slot: Slot): void {
    slot.restartTimer = undefined;
    const child = this.takeSpare(slot) ?? this.forkChild(slot);
    slot.child = child;
    slot.lastPid = child.process.pid ?? 0;
    slot.ready = false;
    slot.startedAt = Date.now();
    slot.lastHeartbeat = Date.now();
    slot.killedAsUnresponsive = false;
    slot.rssBytes = undefined;
    this.setState(slot, 'starting', null);
    this.checkAllReady();
  }

  private onMessage(slot: Slot, child: ClusterWorker, message: unknown): void {
    if (!isLoreleyMessage<ChildMessage>(message)) return;
    if (message.loreley === 'want-settings') {
      this.sendTo(slot, child, this.options.childSettings());
      return;
    }
    if (slot.next === child && message.loreley === 'ready') {
      this.logger.info({ slot: slot.id, childPid: message.pid }, 'replacement child ready');
      this.incoming.get(child.id)?.(true);
      return;
    }
    const retiring = this.retiring.get(child.id);
    if (retiring && message.loreley === 'heartbeat') {
      retiring.commandGroups = message.commandGroups ?? [];
      retiring.heldJobs = message.heldJobs ?? [];
    }
    if (slot.child !== child) return;
    slot.lastHeartbeat = Date.now();
    switch (message.loreley) {
      case 'ready':
        this.logger.info({ slot: slot.id, childPid: message.pid }, 'child ready');
        slot.ready = true;
        if (this.stopping) this.send(slot, { loreley: 'drain', timeoutSeconds: this.options.settings.drainTimeoutSeconds });
        this.checkAllReady();
        break;
      case 'heartbeat':
        slot.rssBytes = message.rssBytes;
        slot.commandGroups = message.commandGroups ?? [];
        slot.heldJobs = message.heldJobs ?? [];
        slot.moreReady = message.moreReady;
        this.setState(slot, message.state, message.jobId ?? null);
        break;
      case 'done':
        this.logger.info({ slot: slot.id, summary: message.summary }, 'scheduler reports the run finished');
        this.emit('done', message.summary);
        break;
    }
  }

  /** Sends `wake` to a worker slot's child (see job-wake.ts); false when it has no ready child. */
  wake(slotId: string): boolean {
    const slot = this.slots.find((s) => s.id === slotId);
    if (!slot || slot.role !== 'worker' || !slot.ready || !slot.child?.isConnected()) return false;
    this.sendTo(slot, slot.child, { loreley: 'wake' });
    return true;
  }

  private send(slot: Slot, message: SupervisorMessage): void {
    if (slot.child) this.sendTo(slot, slot.child, message);
  }

  private sendTo(slot: Slot, child: ClusterWorker, message: SupervisorMessage): void {
    if (!child.isConnected()) return;
    try {
      child.send(message);
    } catch (error) {
      this.logger.debug({ slot: slot.id, err: error }, 'could not message child');
    }
  }

  private onExit(child: ClusterWorker, code: number | null, signal: string | null): void {
    if (this.onSpareExit(child, code, signal)) return;
    const slot = this.byChild.get(child.id);
    if (!slot) return;
    this.byChild.delete(child.id);
    const retired = this.retiring.get(child.id);
    if (retired) {
      this.retiring.delete(child.id);
      this.logger.info({ slot: slot.id, childPid: child.process.pid, code, signal }, 'replaced child exited');
      if (code !== 0) {
        // Killed at the drain deadline, or crashed while draining: what it held is dealt with as for any dead child.
        for (const group of retired.commandGroups) {
          try {
            process.kill(-group, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
        if (retired.heldJobs.length > 0) this.options.lostJobs?.handBack(slot.id, retired.heldJobs, `its replaced worker ${slot.id} died (${signal ?? `code ${code}`})`);
      }
      retired.exited();
      this.checkAllExited();
      return;
    }
    if (slot.next === child) {
      slot.next = undefined;
      this.logger.error({ slot: slot.id, code, signal }, `replacement child for ${slot.id} exited before it was ready (see its log)`);
      this.incoming.get(child.id)?.(false);
      this.checkAllExited();
      return;
    }
    if (slot.child === child) {
      slot.child = undefined;
      slot.ready = false;
      this.allReady = false;
    }
    const uptimeMs = Date.now() - slot.startedAt;
    const how = signal ? `signal ${signal}` : `code ${code}`;
    this.killOrphanedCommands(slot);
    this.handBackHeldJobs(slot, how);

    if (code === EXIT_CONFIG && !this.stopping) {
      this.logger.fatal({ slot: slot.id }, `child ${slot.id} cannot run with these settings (exit ${EXIT_CONFIG}, see its log): stopping everything`);
      this.setState(slot, 'errored', null);
      this.fatal = true;
      this.stop(`${slot.id} reported a configuration error`);
      return;
    }

    if (this.stopping) {
      this.logger.info({ slot: slot.id, code, signal }, 'child exited');
      this.setState(slot, 'exited', null);
      this.checkAllExited();
      return;
    }

    // A signal we did not send (SIGKILL by an operator or the OOM killer) is not the child's crash.
    const external = signal !== null && !slot.killedAsUnresponsive;
    const decision = slot.policy.onCrash(Date.now(), uptimeMs, { external });
    const why = slot.killedAsUnresponsive ? 'was unresponsive and was killed' : `exited unexpectedly (${how})`;
    if (decision.action === 'give-up') {
      this.logger.error(
        { slot: slot.id, crashes: decision.crashes, windowSeconds: this.options.settings.crashLoopWindowSeconds },
        `child ${slot.id} ${why}; it crashed ${decision.crashes} times within ${this.options.settings.crashLoopWindowSeconds}s: slot marked errored and left down`,
      );
      this.setState(slot, 'errored', null);
      const workers = this.slots.filter((s) => s.role === 'worker');
      if (workers.length > 0 && workers.every((s) => s.state === 'errored')) {
        this.fatal = true;
        this.logger.fatal('every worker slot is errored: stopping the supervisor with a non-zero exit');
        this.stop('every worker slot errored');
      } else if (slot.role === 'scheduler') {
        // Without its scheduler the experiment makes no progress and never finishes.
        this.fatal = true;
        this.logger.fatal('the scheduler slot is errored: stopping the supervisor with a non-zero exit');
        this.stop('the scheduler slot errored');
      }
      return;
    }
    slot.restarts += 1;
    this.logger.warn({ slot: slot.id, code, signal, uptimeMs, delayMs: decision.delayMs, restarts: slot.restarts }, `child ${slot.id} ${why}: restarting in ${decision.delayMs} ms`);
    this.setState(slot, 'backoff', null);
    slot.restartTimer = setTimeout(() => {
      if (!this.stopping) this.fork(slot);
    }, decision.delayMs);
  }

  /**
   * A child killed outright (SIGKILL, the OOM killer, our watchdog) cannot end the commands it
   * started in their own process groups; they would run on, unbounded, in a worktree the next
   * child sweeps away. The supervisor ends them instead.
   */
  private killOrphanedCommands(slot: Slot): void {
    for (const group of slot.commandGroups) {
      try {
        process.kill(-group, 'SIGKILL');
        this.logger.warn({ slot: slot.id, processGroup: group }, 'killed a command the dead child left running');
      } catch {
        // Already gone: the child ended it itself.
      }
    }
    slot.commandGroups = [];
  }

  /**
   * A child that died with jobs in hand did not fail them: they go back to the queue now, with the
   * attempt given back, instead of waiting for the queue heartbeat to lapse. A job the child
   * finished in its last moments is left alone (the hand-back checks the row).
   */
  private handBackHeldJobs(slot: Slot, how: string): void {
    const jobs = slot.heldJobs;
    slot.heldJobs = [];
    if (jobs.length === 0 || !this.options.lostJobs) return;
    this.options.lostJobs.handBack(slot.id, jobs, `its worker ${slot.id} died (${how})`);
  }

  /**
   * Spare worker: a child started ahead with the worker's code loaded (SUPERVISOR_SPARE_WORKER),
   * so a worker that dies is replaced by a process that only has to read its settings and
   * connect, not start Node and load every module first. One at a time, made once every slot is
   * ready, again after it was used; never for the scheduler.
   */
  private scheduleSpare(delayMs: number): void {
    if (this.spare || this.spareTimer || this.stopping || !this.options.settings.spareWorker) return;
    if (!this.slots.some((slot) => slot.role === 'worker') || this.spareFailures >= 3) return;
    this.spareTimer = setTimeout(() => {
      this.spareTimer = undefined;
      this.forkSpare();
    }, delayMs);
  }

  private forkSpare(): void {
    if (this.spare || this.stopping || !this.options.settings.spareWorker) return;
    const child = cluster.fork({ ...this.options.childEnv, [CHILD_ENV.role]: 'worker', [CHILD_ENV.spare]: '1', [CHILD_ENV.supervised]: '1' });
    const onMessage = (message: unknown) => {
      if (!isLoreleyMessage<ChildMessage>(message) || message.loreley !== 'spare-ready' || this.spare?.child !== child) return;
      this.spare.ready = true;
      this.spareFailures = 0;
      this.logger.info({ childPid: child.process.pid }, 'spare worker ready');
    };
    child.on('message', onMessage);
    child.on('error', (error) => this.logger.warn({ err: error }, 'spare worker channel error'));
    this.spare = { child, ready: false, onMessage };
  }

  /** The spare, given the slot's id, when one is ready; undefined otherwise (then a fork). */
  private takeSpare(slot: Slot): ClusterWorker | undefined {
    const spare = this.spare;
    if (slot.role !== 'worker' || !spare?.ready || !spare.child.isConnected()) return undefined;
    this.spare = undefined;
    const child = spare.child;
    child.off('message', spare.onMessage);
    this.byChild.set(child.id, slot);
    child.on('message', (message: unknown) => this.onMessage(slot, child, message));
    this.sendTo(slot, child, { loreley: 'assign', workerId: slot.id });
    this.logger.info({ slot: slot.id, childPid: child.process.pid }, 'the spare worker takes the slot');
    return child;
  }

  /** Sends the spare away (it exits at once: it holds nothing). */
  private discardSpare(): void {
    clearTimeout(this.spareTimer);
    this.spareTimer = undefined;
    const spare = this.spare;
    if (!spare) return;
    this.spare = undefined;
    this.discardedSpares.set(spare.child.id, spare.child);
    try {
      if (spare.child.isConnected()) spare.child.send({ loreley: 'drain', timeoutSeconds: 0 } satisfies SupervisorMessage);
      else spare.child.process.kill('SIGTERM');
    } catch {
      spare.child.process.kill('SIGTERM');
    }
  }

  /** True when `child` was a spare (used ones are slot children by then). */
  private onSpareExit(child: ClusterWorker, code: number | null, signal: string | null): boolean {
    if (this.discardedSpares.delete(child.id)) {
      this.checkAllExited();
      return true;
    }
    if (this.spare?.child !== child) return false;
    this.spare = undefined;
    this.spareFailures += 1;
    const again = this.spareFailures < 3;
    this.logger.warn({ childPid: child.process.pid, code, signal }, `the spare worker exited before it was used${again ? '' : ' three times in a row: no more spares'}`);
    this.scheduleSpare(10_000);
    return true;
  }

  private checkHeartbeats(): void {
    const now = Date.now();
    const timeout = this.options.settings.heartbeatTimeoutMs;
    for (const slot of this.slots) {
      const child = slot.child;
      if (!child || slot.killedAsUnresponsive) continue;
      // Start-up connects to the database and may migrate it: it gets twice the time.
      const limit = slot.state === 'starting' ? Math.max(timeout * 2, 60_000) : timeout;
      if (now - slot.lastHeartbeat > limit) {
        slot.killedAsUnresponsive = true;
        this.logger.error({ slot: slot.id, childPid: child.process.pid, silentMs: now - slot.lastHeartbeat }, 'child stopped heartbeating (blocked event loop?): killing it');
        child.process.kill('SIGKILL');
      }
    }
  }

  /** First call: ask every child to drain. Second call: stop them now. */
  stop(reason: string): void {
    const s = this.options.settings;
    if (this.stopping) {
      this.logger.warn({ reason }, 'second stop request: stopping children now');
      for (const child of this.liveChildren()) this.sendTo(this.byChild.get(child.id)!, child, { loreley: 'stop-now' });
      clearTimeout(this.hardDeadline);
      this.hardDeadline = setTimeout(() => this.killAll(), 5000);
      this.hardDeadline.unref();
      return;
    }
    this.stopping = true;
    this.stopReason = reason;
    this.emit('stopping', reason);
    this.discardSpare();
    this.logger.info({ reason, drainTimeoutSeconds: s.drainTimeoutSeconds }, 'draining children');
    for (const slot of this.slots) {
      if (slot.restartTimer) {
        clearTimeout(slot.restartTimer);
        slot.restartTimer = undefined;
        if (slot.state === 'backoff') this.setState(slot, 'exited', null);
      }
      if (slot.child) {
        this.send(slot, { loreley: 'drain', timeoutSeconds: s.drainTimeoutSeconds });
        this.setState(slot, 'draining');
      }
      if (slot.next) this.sendTo(slot, slot.next, { loreley: 'drain', timeoutSeconds: s.drainTimeoutSeconds });
    }
    // Children hand their jobs back at the drain timeout; past that and a grace, nothing is waited for.
    this.hardDeadline = setTimeout(() => this.killAll(), (s.drainTimeoutSeconds + 30) * 1000);
    this.hardDeadline.unref();
    this.checkAllExited();
  }

  private killAll(): void {
    for (const child of this.liveChildren()) {
      this.logger.error({ slot: this.byChild.get(child.id)?.id, childPid: child.process.pid }, 'child did not stop in time: killing it');
      child.process.kill('SIGKILL');
    }
  }

  /** Every child process alive: current ones, replacements starting, replaced ones draining. */
  private liveChildren(): ClusterWorker[] {
    const children: ClusterWorker[] = [];
    for (const slot of this.slots) {
      if (slot.child) children.push(slot.child);
      if (slot.next) children.push(slot.next);
    }
    for (const { child } of this.retiring.values()) children.push(child);
    if (this.spare) children.push(this.spare.child);
    children.push(...this.discardedSpares.values());
    return children;
  }

  private checkAllReady(): void {
    const ready = this.slots.every((slot) => slot.state === 'errored' || (slot.child !== undefined && slot.ready));
    if (ready && !this.allReady && !this.stopping) {
      this.allReady = true;
      this.logger.info({ slots: this.slots.length }, 'all children ready');
      this.emit('all-ready');
      // Only now: a spare starting beside children that are still starting would slow them down.
      this.scheduleSpare(250);
    } else if (!ready) {
      this.allReady = false;
    }
  }

  /** Settings read again by a reload (drain timeout, restart policy limits, heartbeats). */
  useSettings(settings: SupervisorSettings): void {
    this.options = { ...this.options, settings };
  }

  /** Children are running as they should: the event loop turns and no slot is given up on. */
  healthy(): boolean {
    return !this.stopping && this.slots.every((slot) => slot.state !== 'errored');
  }

  /**
   * Rolling reload: one slot at a time, a replacement child is forked (it asks for the settings
   * current now), and once it is ready the old child drains (its job finished or handed back) and
   * exits before the next slot is replaced. Workers first, then the scheduler, whose replacement
   * waits as a standby until the old one releases the scheduler lock. A replacement that fails to
   * start stops the reload and the old child keeps running. Resolves with the slots replaced.
   */
  async reload(onProgress: (message: string) => void = () => undefined): Promise<{ replaced: string[]; failed?: string }> {
    const replaced: string[] = [];
    // The spare runs the code as it was: it goes, and a new one is started after the reload.
    this.discardSpare();
    const order = [...this.slots.filter((s) => s.role === 'worker'), ...this.slots.filter((s) => s.role === 'scheduler')];
    for (const slot of order) {
      if (this.stopping) return { replaced, failed: 'the supervisor is stopping' };
      // A slot waiting to restart (or given up on) forks with the new settings when it next starts.
      if (!slot.child || slot.next) continue;
      onProgress(`reloading ${slot.id} (${replaced.length + 1}/${order.length})`);
      const next = this.forkChild(slot);
      slot.next = next;
      const limitMs = Math.max(this.options.settings.heartbeatTimeoutMs * 2, 60_000);
      const ready = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), limitMs);
        this.incoming.set(next.id, (value) => {
          clearTimeout(timer);
          resolve(value);
        });
      });
      this.incoming.delete(next.id);
      if (!ready || slot.next !== next || this.stopping) {
        if (slot.next === next) {
          slot.next = undefined;
          this.byChild.delete(next.id);
          next.process.kill('SIGKILL');
        }
        return { replaced, failed: this.stopping ? 'the supervisor is stopping' : `${slot.id}: the new child did not become ready` };
      }
      const old = slot.child;
      slot.next = undefined;
      if (!old) {
        // The old child died meanwhile: the replacement takes the slot instead of a restart.
        clearTimeout(slot.restartTimer);
        slot.restartTimer = undefined;
        slot.child = next;
        slot.lastPid = next.process.pid ?? 0;
      } else {
        const exited = new Promise<void>((resolve) => this.retiring.set(old.id, { child: old, exited: resolve, commandGroups: slot.commandGroups, heldJobs: slot.heldJobs }));
        slot.child = next;
        slot.lastPid = next.process.pid ?? 0;
        slot.commandGroups = [];
        slot.heldJobs = [];
        this.sendTo(slot, old, { loreley: 'drain', timeoutSeconds: this.options.settings.drainTimeoutSeconds });
        const deadline = setTimeout(() => {
          this.logger.error({ slot: slot.id, childPid: old.process.pid }, 'replaced child did not stop in time: killing it');
          old.process.kill('SIGKILL');
        }, (this.options.settings.drainTimeoutSeconds + 30) * 1000);
        await exited;
        clearTimeout(deadline);
      }
      slot.startedAt = Date.now();
      slot.lastHeartbeat = Date.now();
      slot.killedAsUnresponsive = false;
      slot.ready = true;
      replaced.push(slot.id);
    }
    this.checkAllReady();
    this.scheduleSpare(250);
    return { replaced };
  }

  private checkAllExited(): void {
    if (!this.stopping || this.liveChildren().length > 0) return;
    clearInterval(this.watchdog);
    clearTimeout(this.hardDeadline);
    clearTimeout(this.spareTimer);
    this.logger.info({ reason: this.stopReason }, 'all children exited');
    this.resolveStopped(this.fatal ? 1 : 0);
  }
}
