import cluster from 'node:cluster';
import { AggregatorRegistry, Histogram, Registry } from 'prom-client';

/**
 * What a child process measures itself for the supervisor's Prometheus endpoint: how long its jobs
 * take and how long they waited to be picked up. The supervisor asks every child over the cluster
 * IPC channel (prom-client's own request/response messages) and sums the answers; everything the
 * database already knows (jobs by status, archive, cost) is read there instead.
 *
 * Histograms live in the child's memory: a restarted child starts from zero, which Prometheus
 * treats as a counter reset.
 */

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

export type JobOutcomeLabel = 'succeeded' | 'failed' | 'handed_back';

export function observeJobPickup(queuedAt: Date | null, startedAt: Date | null): void {
  if (!queuedAt || !startedAt) return;
  pickupLatency.observe(Math.max(0, (startedAt.getTime() - queuedAt.getTime()) / 1000));
}

export function observeJobDone(outcome: JobOutcomeLabel, seconds: number): void {
  jobDuration.observe({ outcome }, seconds);
}

let answering = false;

/** In a supervised child: answer the supervisor's metrics requests with this process's registry. */
export function answerMetricsRequests(): void {
  if (answering || !cluster.isWorker) return;
  answering = true;
  AggregatorRegistry.setRegistries([registry]);
  // The constructor installs prom-client's listener for the primary's requests.
  new AggregatorRegistry();
}
