import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { FitInput, StoredProjection } from './fit.ts';

// fit-worker.ts beside this file, or fit-worker.js when running the compiled dist/.
const WORKER_MODULE = new URL(`./fit-worker${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url);

/**
 * Runs `fitProjection` in a worker thread, so the scheduler's event loop keeps ticking through
 * the PCA and the k-means (a few hundred ms at 4,096 × 256 samples). One thread per fit: a refit
 * comes every MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL ingestions, and a thread that exits
 * holds no memory in between. The samples' buffer is transferred, so the caller's array is emptied.
 */
export function fitInThread(input: FitInput): Promise<StoredProjection> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_MODULE, { workerData: input, transferList: [input.samples.buffer as ArrayBuffer] });
    let result: StoredProjection | undefined;
    worker.once('message', (model: StoredProjection) => {
      result = model;
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`the refit's worker thread exited with code ${code} without a model`));
    });
  });
}
