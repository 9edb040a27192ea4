import type { EnvReader } from './reader.ts';

export interface SupervisorSettings {
  readonly workers: number;
  readonly scheduler: boolean;
  readonly workerIdPrefix: string;
  readonly schedulerIdPrefix: string;
  readonly drainTimeoutSeconds: number;
  readonly restartBackoffInitialMs: number;
  readonly restartBackoffMaxMs: number;
  /** A child that has run this long without crashing gets its backoff reset. */
  readonly restartResetAfterSeconds: number;
  /** More crashes than this within the window mark the slot errored. */
  readonly crashLoopMaxRestarts: number;
  readonly crashLoopWindowSeconds: number;
  /** A child killed from outside (SIGKILL, OOM) after running this long does not count as a crash. */
  readonly minUptimeSeconds: number;
  readonly heartbeatIntervalMs: number;
  /** A child silent this long (event loop blocked) is killed and restarted. */
  readonly heartbeatTimeoutMs: number;
  readonly statusIntervalSeconds: number;
  readonly exitWhenDone: boolean;
  /** Check the repository, branch and programs before starting anything (exit 78 when one is missing). */
  readonly preflight: boolean;
  /** Keep one worker process started ahead (code loaded, no slot yet): a crashed worker's slot takes it. */
  readonly spareWorker: boolean;
  /** `--metrics-port`: the Prometheus endpoint; unset means none. */
  readonly metricsPort: number | undefined;
  /** Loopback unless widened on purpose: the metrics name commits and costs. */
  readonly metricsHost: string;
}

const ID_PREFIX = /^[A-Za-z][A-Za-z0-9_-]{0,40}$/;

function prefix(reader: EnvReader, name: string, fallback: string): string {
  const value = reader.string(name, fallback);
  if (!ID_PREFIX.test(value)) {
    reader.problem(name, `must start with a letter and use only letters, digits, _ and - (got ${JSON.stringify(value)})`);
    return fallback;
  }
  return value;
}

export function readSupervisorSettings(reader: EnvReader): SupervisorSettings {
  const restartBackoffInitialMs = reader.int('SUPERVISOR_RESTART_BACKOFF_INITIAL_MS', 1000, { min: 0 });
  const restartBackoffMaxMs = reader.int('SUPERVISOR_RESTART_BACKOFF_MAX_MS', 30_000, { min: 0 });
  if (restartBackoffMaxMs < restartBackoffInitialMs) {
    reader.problem('SUPERVISOR_RESTART_BACKOFF_MAX_MS', `must be >= SUPERVISOR_RESTART_BACKOFF_INITIAL_MS (${restartBackoffInitialMs})`);
  }
  const heartbeatTimeoutMs = reader.int('SUPERVISOR_HEARTBEAT_TIMEOUT_MS', 30_000, { min: 100 });
  // A child reports every state change at once; the periodic beat only says it is alive, and at
  // 16 children a beat a second cost the supervisor more CPU than anything else it does idle.
  // Several beats fit in the timeout whatever it is set to.
  const heartbeatIntervalMs = reader.int('SUPERVISOR_HEARTBEAT_INTERVAL_MS', Math.max(50, Math.min(5000, Math.floor(heartbeatTimeoutMs / 3))), { min: 50 });
  if (heartbeatTimeoutMs <= heartbeatIntervalMs) {
    reader.problem('SUPERVISOR_HEARTBEAT_TIMEOUT_MS', `must be greater than SUPERVISOR_HEARTBEAT_INTERVAL_MS (${heartbeatIntervalMs})`);
  }
  return {
    workers: reader.int('SUPERVISOR_WORKERS', 2, { min: 0, max: 256 }),
    scheduler: reader.bool('SUPERVISOR_SCHEDULER', true),
    workerIdPrefix: prefix(reader, 'SUPERVISOR_WORKER_ID_PREFIX', 'worker'),
    schedulerIdPrefix: prefix(reader, 'SUPERVISOR_SCHEDULER_ID_PREFIX', 'scheduler'),
    drainTimeoutSeconds: reader.float('SUPERVISOR_DRAIN_TIMEOUT_SECONDS', 60, { min: 0 }),
    restartBackoffInitialMs,
    restartBackoffMaxMs,
    restartResetAfterSeconds: reader.float('SUPERVISOR_RESTART_RESET_AFTER_SECONDS', 60, { min: 0 }),
    crashLoopMaxRestarts: reader.int('SUPERVISOR_CRASH_LOOP_MAX_RESTARTS', 5, { min: 0 }),
    crashLoopWindowSeconds: reader.float('SUPERVISOR_CRASH_LOOP_WINDOW_SECONDS', 300, { min: 1 }),
    minUptimeSeconds: reader.float('SUPERVISOR_MIN_UPTIME_SECONDS', 5, { min: 0 }),
    heartbeatIntervalMs,
    heartbeatTimeoutMs,
    statusIntervalSeconds: reader.float('SUPERVISOR_STATUS_INTERVAL_SECONDS', 15, { min: 0 }),
    exitWhenDone: reader.bool('SUPERVISOR_EXIT_WHEN_DONE', false),
    preflight: reader.bool('SUPERVISOR_PREFLIGHT', true),
    spareWorker: reader.bool('SUPERVISOR_SPARE_WORKER', true),
    metricsPort: reader.optionalInt('SUPERVISOR_METRICS_PORT', { min: 0, max: 65535 }),
    metricsHost: reader.string('SUPERVISOR_METRICS_HOST', '127.0.0.1'),
  };
}
