import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Experiment } from './experiment.ts';
import { whileRunning } from './experiment.ts';
import { FIXTURES, waitFor, type Harness, type Proc } from './harness.ts';

/**
 * The raw pg-boss baseline worker (fixtures/pgboss-worker.mjs) in a process of its own, on a
 * queue of its own in the experiment's database. Jobs are sent by the bench's pg-boss instance,
 * the same one that sends Loreley's, so only the receiving side differs.
 */
export interface RawWorker {
  readonly queue: string;
  /** Sends a job with no data; returns its pg-boss id. */
  send(): Promise<string>;
  /** When the worker's handler received the job (wall-clock ms). */
  received(id: string, timeoutMs?: number): Promise<number>;
  /** When pg-boss marked the job completed (wall-clock ms, from the database). */
  completed(id: string, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startRawWorker(harness: Harness, experiment: Experiment, queue: string): Promise<RawWorker> {
  const boss = experiment.boss;
  const bossSchema = experiment.settings.database.bossSchema;
  const proc: Proc = harness.spawn(
    'raw pg-boss worker',
    [path.join(FIXTURES, 'pgboss-worker.mjs'), experiment.databaseUrl, bossSchema, queue],
    { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' }, cwd: experiment.root, ipc: true },
  );
  const arrivals = new Map<string, number>();
  let ready = false;
  proc.child.on('message', (message: { type?: string; id?: string; receivedAt?: number }) => {
    if (message.type === 'ready') ready = true;
    if (message.type === 'received' && message.id) arrivals.set(message.id, message.receivedAt!);
  });
  await whileRunning(proc, waitFor('the raw pg-boss worker to be ready', () => ready));

  return {
    queue,
    async send() {
      const id = await boss.send(queue, {});
      if (!id) throw new Error('pg-boss refused a baseline job');
      return id;
    },
    received(id, timeoutMs = 30_000) {
      return whileRunning(proc, waitFor(`the raw worker to receive ${id}`, () => arrivals.get(id), timeoutMs, 5));
    },
    async completed(id, timeoutMs = 30_000) {
      // Looking is left until the job is surely done, so polling does not compete with it.
      await sleep(50);
      return whileRunning(
        proc,
        waitFor(
          `pg-boss to complete ${id}`,
          async () => {
            const { rows } = await experiment.pool.query<{ state: string; completedOn: number | null }>(
              `SELECT state::text AS state, extract(epoch FROM completed_on)::float8 * 1000 AS "completedOn"
                 FROM ${bossSchema}.job WHERE name = $1 AND id = $2`,
              [queue, id],
            );
            const row = rows[0];
            if (row && row.state !== 'completed' && row.state !== 'active' && row.state !== 'created') {
              throw new Error(`baseline job ${id} ended ${row.state}`);
            }
            return row?.state === 'completed' ? row.completedOn! : undefined;
          },
          timeoutMs,
          20,
        ),
      );
    },
    async stop() {
      await proc.stop(3000);
    },
  };
}
