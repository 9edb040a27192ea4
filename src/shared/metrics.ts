import cluster from 'node:cluster';
import type { Histogram } from 'prom-client';
import { CHILD_ENV } from './ipc.ts';

/**
 * What a child process measures itself for the supervisor's Prometheus endpoint: how long its jobs
 * take and how long they waited to be picked up. The supervisor asks every child over the cluster
 * IPC channel (prom-client's own request/response messages) and sums the answers; everything the
 * database already knows (jobs by status, archive, cost) is read there instead.
 *
 * Histograms live in the child's memory: a restarted child starts from zero, which Prometheus
 * treats as a counter reset. prom-client (with the OpenTelemetry API it pulls in: ~25 ms of CPU
 * and several MB per process) is loaded only in a child whose supervisor serves metrics (it sets
 * LORELEY_CHILD_METRICS=1); elsewhere nobody would ask, and an observation costs nothing.
 */

interface Recorder {
  readonly jobDuration: Histogram<'outcome'>;
  readonly pickupLatency: Histogram;
}

let recorder: Promise<Recorder | undefined> | undefined;

async function loadRecorder(): Promise<Recorder> {
  const { AggregatorRegistry, Histogram, Registry } = await import('prom-client');
  const registry = new Registry();
  const jobDuration = new Histogram({
    name: 'loreley_job_duration_seconds',
    help: 'Wall time of an evolution job in a worker, from claim to result (agent, commit, evaluator, storing)',
    labelNames: ['outcome'] as const,
    buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [registry],
  });
  const pickupLatency = new Histogram({
    name: 'loreley_job_pickup_latency_seconds',
    help: 'Time from a job being queued to a worker starting it',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300],
    registers: [registry],
  });
  AggregatorRegistry.setRegistries([registry]);
  // The constructor installs prom-client's listener for the primary's requests.
  new AggregatorRegistry();
  return { jobDuration, pickupLatency };
}

export type JobOutcomeLabel = 'succeeded' | 'failed' | 'handed_back';

export function observeJobPickup(queuedAt: Date | null, startedAt: Date | null): void {
  if (!recorder || !queuedAt || !startedAt) return;
  const seconds = Math.max(0, (startedAt.getTime() - queuedAt.getTime()) / 1000);
  void recorder.then((r) => r?.pickupLatency.observe(seconds));
}

export function observeJobDone(outcome: JobOutcomeLabel, seconds: number): void {
  void recorder?.then((r) => r?.jobDuration.observe({ outcome }, seconds));
}

/** In a supervised child whose supervisor serves metrics: answer its requests with this process's registry. */
export function answerMetricsRequests(): void {
  if (recorder || !cluster.isWorker || process.env[CHILD_ENV.metrics] !== '1') return;
  // Without prom-client the child still works; its figures are just absent from the scrape.
  recorder = loadRecorder().catch(() => undefined);
}
