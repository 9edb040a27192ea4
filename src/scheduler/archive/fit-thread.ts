import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type pg from 'pg';
import type { Pool } from '../../shared/db/pool.ts';
import type { RefitComputed, RefitJob } from './refit-compute.ts';

// fit-worker.ts beside this file, or fit-worker.js when running the compiled dist/.
const WORKER_MODULE = new URL(`./fit-worker${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url);

/** What the worker thread is started with: the job, and how to reach the database. */
export interface ThreadInput {
  readonly job: RefitJob;
  readonly connection: pg.ClientConfig;
}

/**
 * Runs `computeRefit` in a worker thread with its own database connection (the pool's settings,
 * search_path included), so the scheduler's event loop keeps ticking through the reading of
 * thousands of vectors, the PCA and the k-means: parsing 14,000 256-dimension vectors and
 * fitting on 4,096 of them is a second or more of CPU and hundreds of MB of garbage at 10,000
 * elites. One thread per refit: a refit comes every MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL
 * ingestions, and a thread that exits holds no memory in between.
 */
export function refitInThread(pool: Pool, job: RefitJob): Promise<RefitComputed> {
  const { connectionString, host, port, user, password, database, options, ssl, application_name: applicationName } = pool.options;
  // Only what a structured clone carries: a password callback or TLS hooks stay behind (the
  // connection string still says sslmode).
  const connection: pg.ClientConfig = {
    connectionString, host, port, user, database, options,
    password: typeof password === 'string' ? password : undefined,
    ssl: typeof ssl === 'boolean' ? ssl : undefined,
    application_name: applicationName ? `${applicationName} refit` : undefined,
  };
  const input: ThreadInput = { job, connection: Object.fromEntries(Object.entries(connection).filter(([, value]) => value !== undefined)) };
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_MODULE, { workerData: input });
    let result: RefitComputed | undefined;
    worker.once('message', (computed: RefitComputed) => {
      result = computed;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`the refit's worker thread exited with code ${code} without a result`));
    });
  });
}
