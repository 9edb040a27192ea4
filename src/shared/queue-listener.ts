import { createHash } from 'node:crypto';
import pg from 'pg';
import { Backoff } from './backoff.ts';
import { errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import type { Settings } from './settings/index.ts';

/**
 * The channel pg-boss 12 NOTIFYs on when a job is sent to a `notify` queue, with the queue's name
 * as the payload: `'pgboss_' || left(encode(sha224(<schema>), 'hex'), 24)` (its
 * `notifyChannelSql`, not exported). Our schema names are plain lower-case identifiers, which
 * pg-boss uses as they are.
 */
export function queueNotifyChannel(bossSchema: string): string {
  return `pgboss_${createHash('sha224').update(bossSchema).digest('hex').slice(0, 24)}`;
}

/** How often the LISTEN connection is checked (a silently dropped connection would hear nothing). */
const CHECK_INTERVAL_MS = 30_000;
const CHECK_TIMEOUT_MS = 10_000;

export interface QueueListenerOptions {
  readonly url: string;
  readonly settings: Settings;
  readonly logger: Logger;
  /** Postgres `application_name` of the LISTEN connection. */
  readonly applicationName: string;
  /** A job was sent to the experiment's queue. */
  readonly onSent: () => void;
  /** Listening (again): jobs sent while not listening were not heard, so look once. */
  readonly onListening: () => void;
  /** What the first `listening` line says (who listens for whom). */
  readonly listeningMessage: string;
}

/**
 * One LISTEN connection for the experiment's queue: one `pg.Client`, reconnected with the capped
 * backoff of `backoff.ts` when the database goes away or the connection stops answering its
 * periodic check. The supervisor's (one per host, `supervisor/job-wake.ts`) and a worker's run by
 * hand are this same class.
 */
export class QueueListener {
  private readonly options: QueueListenerOptions;
  private readonly queue: string;
  private readonly channel: string;
  private readonly backoff = new Backoff();
  private client: pg.Client | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private listening = false;

  constructor(options: QueueListenerOptions) {
    this.options = options;
    this.queue = options.settings.queue.name;
    this.channel = queueNotifyChannel(options.settings.database.bossSchema);
  }

  /** True while the connection LISTENs (a worker then polls only as a backstop). */
  get isListening(): boolean {
    return this.listening;
  }

  /** Connects in the background; failures are retried until `close()`. */
  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    this.retryTimer = undefined;
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.options.url, application_name: this.options.applicationName, keepAlive: true });
    this.client = client;
    client.on('error', (error) => this.drop(client, error));
    client.on('end', () => this.drop(client, new Error('the LISTEN connection ended')));
    client.on('notification', (message) => {
      if (message.channel === this.channel && message.payload === this.queue) this.options.onSent();
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel}"`);
    } catch (error) {
      this.drop(client, error);
      return;
    }
    if (this.client !== client) return;
    const again = this.backoff.failures > 0;
    this.backoff.reset();
    this.listening = true;
    this.options.logger.info({ channel: this.channel, queue: this.queue }, again ? 'listening for sent jobs again' : this.options.listeningMessage);
    this.scheduleCheck(client);
    this.options.onListening();
  }

  private scheduleCheck(client: pg.Client): void {
    this.checkTimer = setTimeout(() => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the LISTEN connection did not answer within ${CHECK_TIMEOUT_MS / 1000} s`)), CHECK_TIMEOUT_MS);
      });
      // pg-boss's own check: the connection answers, and still LISTENs (a pooler could drop it).
      const check = client.query<{ listening: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_listening_channels() AS c WHERE c = $1) AS listening', [this.channel]);
      Promise.race([check, timeout])
        .then(({ rows }) => {
          if (!rows[0]?.listening) throw new Error('the LISTEN registration was lost');
          if (this.client === client) this.scheduleCheck(client);
        })
        .catch((error: unknown) => this.drop(client, error))
        .finally(() => clearTimeout(timer));
    }, CHECK_INTERVAL_MS);
    this.checkTimer.unref();
  }

  /** Forgets `client` (once) and, unless closing, connects again after the backoff. */
  private drop(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    clearTimeout(this.checkTimer);
    client.removeAllListeners('notification');
    client.removeAllListeners('end');
    // A late socket error on the dropped client must not go unhandled.
    client.removeAllListeners('error');
    client.on('error', () => undefined);
    client.end().catch(() => undefined);
    if (this.closed) return;
    const wasListening = this.listening;
    this.listening = false;
    const retryInMs = this.backoff.next();
    const line = { error: errorMessage(error), retryInMs, failedTries: this.backoff.failures };
    if (wasListening) this.options.logger.warn(line, 'lost the LISTEN connection: workers poll until it is back');
    else this.options.logger.warn(line, 'cannot LISTEN for sent jobs yet: workers poll until it works');
    this.retryTimer = setTimeout(() => void this.connect(), retryInMs);
    this.retryTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listening = false;
    clearTimeout(this.retryTimer);
    clearTimeout(this.checkTimer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', () => undefined);
    await client.end().catch(() => undefined);
  }
}
