import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import type { ThreadInput } from './fit-thread.ts';
import { computeRefit } from './refit-compute.ts';

/**
 * Worker thread entry (see fit-thread.ts): one refit's reading, fitting and projecting on a
 * connection of its own, the result posted back; then the thread exits.
 */
const { job, connection } = workerData as ThreadInput;
const client = new pg.Client(connection);
client.on('error', () => undefined);
try {
  await client.connect();
  parentPort?.postMessage(await computeRefit(client, job));
} finally {
  await client.end().catch(() => undefined);
}
