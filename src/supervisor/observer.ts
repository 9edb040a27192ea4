import path from 'node:path';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { bestBranchName } from '../shared/experiment.ts';
import type { Logger } from '../shared/logger.ts';
import type { Settings } from '../shared/settings/index.ts';
import { errorMessage } from '../shared/errors.ts';
import type { MetricsServer } from './metrics.ts';
import { readProgress, type Progress } from './progress.ts';
import { statusLine } from './status.ts';
import { formatRunSummary, type RunOutcome } from './summary.ts';
import type { SlotView } from './supervisor.ts';

/**
 * What the supervisor shows about the run, apart from supervising it: the console status line
 * (children, jobs done of budget, best score, cost), and the summary printed to stdout at the end.
 * Reads the database through one small pool of its own; a failed read is logged and skipped, never
 * fatal: watching must not stop the run.
 */

export interface RunObserverOptions {
  readonly settings: Settings;
  readonly url: string;
  readonly logger: Logger;
  readonly view: () => readonly SlotView[];
}

/** Where `loreley report` writes by default, and where the summary says the report is. */
export function defaultReportFile(settings: Pick<Settings, 'logs' | 'experiment'>): string {
  return path.join(settings.logs.baseDir, 'logs', settings.experiment.namespace, 'report.html');
}

export class RunObserver {
  private readonly options: RunObserverOptions;
  private readonly pool: Pool;
  private readonly startedAt = Date.now();
  private atStart: Progress | undefined;
  private latest: Progress | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<Progress | undefined> | undefined;
  private metrics: MetricsServer | undefined;

  constructor(options: RunObserverOptions) {
    this.options = options;
    this.pool = createPool({ url: options.url, settings: options.settings.database, applicationName: 'loreley-supervisor-observer', max: 1 });
    this.pool.on('error', (error) => options.logger.debug({ err: error }, 'observer connection error'));
  }

  /**
   * Reads where the run starts from and opens the metrics endpoint (`--metrics-port`); call before
   * the children start. Throws when the endpoint cannot listen (the port is taken).
   */
  async start(): Promise<void> {
    this.atStart = await this.refresh();
    const { supervisor } = this.options.settings;
    if (supervisor.metricsPort === undefined) return;
    // prom-client (and the OpenTelemetry API it pulls in) only for a supervisor that serves metrics.
    const { startMetricsServer } = await import('./metrics.ts');
    try {
      this.metrics = await startMetricsServer({
        host: supervisor.metricsHost,
        port: supervisor.metricsPort,
        logger: this.options.logger,
        view: this.options.view,
        progress: () => this.refresh(),
      });
    } catch (error) {
      await this.pool.end().catch(() => undefined);
      throw new Error(`the metrics endpoint cannot listen on ${supervisor.metricsHost}:${supervisor.metricsPort}: ${errorMessage(error)}`);
    }
  }

  /** The metrics endpoint's URL, when there is one. */
  get metricsUrl(): string | undefined {
    return this.metrics?.url;
  }

  /** The latest progress, read again (one read at a time; concurrent callers share it). */
  refresh(): Promise<Progress | undefined> {
    this.reading ??= readProgress(this.pool, this.options.settings)
      .then((progress) => (this.latest = progress))
      .catch((error: unknown) => {
        this.options.logger.warn({ err: error }, 'could not read the run\'s progress');
        return this.latest;
      })
      .finally(() => (this.reading = undefined));
    return this.reading;
  }

  get progress(): Progress | undefined {
    return this.latest;
  }

  /** Logs the status line every `intervalSeconds`, with fresh progress. */
  startStatusLine(intervalSeconds: number): void {
    if (intervalSeconds <= 0) return;
    this.timer = setInterval(() => {
      void this.refresh().then((progress) => this.options.logger.info({ status: statusLine(this.options.view(), progress) }, 'status'));
    }, intervalSeconds * 1000);
    this.timer.unref();
  }

  /** Prints the end-of-run summary to stdout and closes the pool. */
  async finish(outcome: RunOutcome): Promise<void> {
    clearInterval(this.timer);
    await this.metrics?.close();
    const { settings } = this.options;
    const progress = await this.refresh();
    await this.pool.end().catch(() => undefined);
    if (!progress) {
      process.stdout.write(`Run ended (${outcome.kind}); its results could not be read: see loreley status.\n`);
      return;
    }
    const text = formatRunSummary({
      experiment: settings.experiment.raw,
      outcome,
      progress,
      atStart: this.atStart,
      wallMs: Date.now() - this.startedAt,
      checkout: {
        branch: bestBranchName(settings.experiment),
        remoteUrl: settings.repository.remoteUrl,
        pushed: settings.repository.push,
        baseClone: settings.worker.git.baseClone,
      },
      logsDirectory: path.join(settings.logs.baseDir, 'logs', settings.experiment.namespace),
      reportFile: defaultReportFile(settings),
    });
    this.options.logger.info({ summary: text }, 'run summary');
    process.stdout.write(`\n${text}`);
  }
}
