import cluster from 'node:cluster';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import { JOB_STATUSES } from '../shared/db/jobs.ts';
import type { Logger } from '../shared/logger.ts';
import type { Progress } from './progress.ts';
import type { SlotState, SlotView } from './supervisor.ts';

/**
 * The supervisor's Prometheus endpoint (`--metrics-port`): one scrape shows the whole service.
 * The children's own measurements (job duration, pick-up latency: src/shared/metrics.ts) are
 * fetched over the cluster IPC channel with prom-client's request/response messages and summed
 * with its `AggregatorRegistry.aggregate`; the children's states and restarts come from the
 * supervisor's view; jobs, queue depth, archive, best fitness and model usage from the database,
 * read once per scrape.
 *
 * A child that does not answer within `childTimeoutMs` (starting, blocked, dying) is left out of
 * that scrape rather than failing it, and counted in `loreley_metrics_children_unanswered`.
 */

const GET_METRICS_REQ = 'prom-client:getMetricsReq';
const GET_METRICS_RES = 'prom-client:getMetricsRes';
const SLOT_STATES: readonly SlotState[] = ['starting', 'idle', 'busy', 'draining', 'standby', 'stopped', 'backoff', 'errored', 'exited'];

export interface MetricsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly logger: Logger;
  readonly view: () => readonly SlotView[];
  /** Fresh progress from the database, or the last known when the database does not answer. */
  readonly progress: () => Promise<Progress | undefined>;
  readonly childTimeoutMs?: number;
}

export interface MetricsServer {
  readonly url: string;
  close(): Promise<void>;
}

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * Asks every connected child of a slot (`pids`; not the spare worker, which has no registry yet)
 * for its registry; resolves with the answers that came in time.
 */
function childMetrics(timeoutMs: number, pids: ReadonlySet<number>): Promise<{ answers: MetricsJson[]; unanswered: number }> {
  return new Promise((resolve) => {
    const requestId = `loreley-${process.pid}-${Date.now()}-${Math.random()}`;
    const answers: MetricsJson[] = [];
    let pending = 0;
    const finish = () => {
      clearTimeout(timer);
      cluster.off('message', onMessage);
      resolve({ answers, unanswered: pending });
    };
    const onMessage = (_worker: unknown, message: { type?: string; requestId?: unknown; metrics?: MetricsJson[]; error?: string }) => {
      if (message?.type !== GET_METRICS_RES || message.requestId !== requestId) return;
      pending -= 1;
      if (!message.error && Array.isArray(message.metrics)) answers.push(...message.metrics);
      if (pending === 0) finish();
    };
    cluster.on('message', onMessage);
    for (const child of Object.values(cluster.workers ?? {})) {
      if (!child?.isConnected() || !pids.has(child.process.pid ?? -1)) continue;
      try {
        child.send({ type: GET_METRICS_REQ, requestId });
        pending += 1;
      } catch {
        // Disconnecting right now: left out.
      }
    }
    const timer = setTimeout(finish, pending === 0 ? 0 : timeoutMs);
  });
}

/** The supervisor's own gauges, set from the view and the progress just before each scrape. */
function supervisorRegistry(): { registry: Registry; update(view: readonly SlotView[], progress: Progress | undefined, unanswered: number): void } {
  const registry = new Registry();
  const gauge = <T extends string>(name: string, help: string, labelNames: readonly T[] = []) => new Gauge<T>({ name, help, labelNames, registers: [registry] });
  const jobs = gauge('loreley_jobs', 'Evolution jobs by status (the baseline not included)', ['status']);
  const budget = gauge('loreley_job_budget', 'SCHEDULER_MAX_TOTAL_JOBS (absent when unbounded)');
  const queueDepth = gauge('loreley_queue_depth', 'Jobs waiting for a worker: pending (not yet dispatched) and queued');
  const children = gauge('loreley_children', 'Supervised children by state', ['state', 'role']);
  const restarts = gauge('loreley_child_restarts', 'Restarts of each slot since the supervisor started', ['slot', 'role']);
  const elites = gauge('loreley_archive_elites', 'Commits held in the MAP-Elites archive');
  const cells = gauge('loreley_archive_cells', 'Cells of the archive over every island');
  const coverage = gauge('loreley_archive_coverage_ratio', 'Archive cells filled, 0..1');
  const best = gauge('loreley_best_fitness', 'Best fitness so far');
  const baseline = gauge('loreley_baseline_fitness', 'Fitness of the root commit');
  const calls = gauge('loreley_model_calls', 'Model calls made for the experiment', ['ok']);
  const tokens = gauge('loreley_model_tokens', 'Model tokens used', ['kind']);
  const cost = gauge('loreley_model_cost_usd', 'Model spending in US dollars');
  const maxCost = gauge('loreley_model_cost_budget_usd', 'LORELEY_MAX_COST_USD (absent when unbounded)');
  const unansweredGauge = gauge('loreley_metrics_children_unanswered', 'Children that did not answer this scrape in time');
  return {
    registry,
    update(view, progress, unanswered) {
      children.reset();
      for (const role of ['worker', 'scheduler'] as const) {
        for (const state of SLOT_STATES) children.set({ state, role }, view.filter((slot) => slot.role === role && slot.state === state).length);
      }
      restarts.reset();
      for (const slot of view) restarts.set({ slot: slot.id, role: slot.role }, slot.restarts);
      unansweredGauge.set(unanswered);
      if (!progress) return;
      for (const status of JOB_STATUSES) jobs.set({ status }, progress.jobs[status]);
      if (progress.budget !== null) budget.set(progress.budget);
      queueDepth.set(progress.jobs.pending + progress.jobs.queued);
      elites.set(progress.archive.elites);
      cells.set(progress.archive.cells);
      coverage.set(progress.archive.coverage);
      if (progress.best) best.set(progress.best.value);
      if (progress.baseline?.fitness !== null && progress.baseline?.fitness !== undefined) baseline.set(progress.baseline.fitness);
      calls.set({ ok: 'true' }, progress.usage.calls - progress.usage.failedCalls);
      calls.set({ ok: 'false' }, progress.usage.failedCalls);
      tokens.set({ kind: 'prompt' }, progress.usage.promptTokens);
      tokens.set({ kind: 'completion' }, progress.usage.completionTokens);
      cost.set(progress.usage.costUsd);
      if (progress.maxCostUsd !== null) maxCost.set(progress.maxCostUsd);
    },
  };
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const own = supervisorRegistry();
  const scrape = async (): Promise<string> => {
    const view = options.view();
    const pids = new Set(view.flatMap((slot) => (slot.pid === undefined ? [] : [slot.pid])));
    const [children, progress] = await Promise.all([childMetrics(options.childTimeoutMs ?? 2000, pids), options.progress()]);
    own.update(view, progress, children.unanswered);
    const parts = [await own.registry.metrics()];
    if (children.answers.length > 0) parts.push(await AggregatorRegistry.aggregate(children.answers).metrics());
    return parts.join('\n');
  };
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' || (path !== '/metrics' && path !== '/')) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: scrape /metrics\n');
      return;
    }
    scrape().then(
      (body) => response.writeHead(200, { 'content-type': Registry.PROMETHEUS_CONTENT_TYPE }).end(body),
      (error: unknown) => {
        options.logger.warn({ err: error }, 'metrics scrape failed');
        response.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed: see the supervisor log\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.unref();
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}/metrics`;
  options.logger.info({ url }, 'Prometheus metrics endpoint listening');
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
