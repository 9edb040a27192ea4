/**
 * Messages between the supervisor and its children over the cluster IPC channel. Kept tiny and
 * tagged, so either side ignores what it does not understand (a newer child under an older
 * supervisor, or a stray message from a library).
 */

export type ChildState = 'starting' | 'idle' | 'busy' | 'draining' | 'standby' | 'stopped';

/** A job a worker holds: the evolution job and the queue job it came on. */
export interface HeldJob {
  readonly jobId: string;
  readonly queueJobId: string;
}

export type ChildMessage =
  /** A child's first message, once it listens: the supervisor answers with `settings`. */
  | { readonly loreley: 'want-settings' }
  | { readonly loreley: 'ready'; readonly workerId: string; readonly role: string; readonly pid: number }
  | {
      readonly loreley: 'heartbeat';
      readonly state: ChildState;
      readonly jobId?: string | null;
      /**
       * `busy` only: whether the fetch that took the job left more jobs ready (the supervisor then
       * wakes the next idle worker); absent when not known.
       */
      readonly moreReady?: boolean;
      readonly rssBytes?: number;
      /** Process groups of the agent/evaluator commands running now: killed by the supervisor if the child dies. */
      readonly commandGroups?: readonly number[];
      /** The jobs in hand: handed back to the queue by the supervisor if the child dies with them. */
      readonly heldJobs?: readonly HeldJob[];
    }
  | { readonly loreley: 'done'; readonly summary: Record<string, unknown> }
  /** A spare worker has loaded its code and waits for `assign` (it has no slot, settings or database yet). */
  | { readonly loreley: 'spare-ready' };

export type SupervisorMessage =
  /**
   * The first message a child gets: the environment its settings are read from (the supervisor's
   * snapshot of `.env`, its environment and its flags, DATABASE_URL included). A child never reads
   * `.env` itself, so siblings always agree and only a reload changes what they run with; and the
   * credentials stay out of the child's own environment (`/proc/<pid>/environ`).
   */
  | { readonly loreley: 'settings'; readonly env: Readonly<Record<string, string>>; readonly cwd: string }
  | { readonly loreley: 'drain'; readonly timeoutSeconds: number }
  | { readonly loreley: 'stop-now' }
  /** To a spare worker: take this slot (it then asks for the settings and starts as that worker). */
  | { readonly loreley: 'assign'; readonly workerId: string }
  /**
   * To an idle worker: a job was sent to the queue, fetch now. The supervisor LISTENs for the
   * host and wakes one worker per notification, so N idle workers do not all fetch (and their
   * backends do not all read the NOTIFY) for each job.
   */
  | { readonly loreley: 'wake' };

/**
 * A Loreley message (tagged with `loreley`) rather than a stray one. Which kind it is follows from
 * the channel it arrived on: the supervisor reads `ChildMessage`s, a child `SupervisorMessage`s.
 */
export function isLoreleyMessage<T extends ChildMessage | SupervisorMessage>(value: unknown): value is T {
  return typeof value === 'object' && value !== null && typeof (value as { loreley?: unknown }).loreley === 'string';
}

/** Environment variables the supervisor hands its children. */
export const CHILD_ENV = {
  workerId: 'LORELEY_WORKER_ID',
  role: 'LORELEY_ROLE',
  supervised: 'LORELEY_SUPERVISED',
  /** '1' for a spare worker: load the worker's code, then wait for `assign`. */
  spare: 'LORELEY_SPARE',
  /** '1' when the supervisor serves Prometheus metrics and will ask its children for theirs. */
  metrics: 'LORELEY_CHILD_METRICS',
  /** '1' when the supervisor LISTENs for the host and sends `wake`: the worker's queue does not LISTEN itself. */
  wake: 'LORELEY_WAKE',
} as const;

/** The exit code of a child whose settings cannot work (sysexits EX_CONFIG): not worth restarting. */
export const EXIT_CONFIG = 78;
