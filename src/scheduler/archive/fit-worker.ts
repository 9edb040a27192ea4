import { parentPort, workerData } from 'node:worker_threads';
import { fitProjection, type FitInput } from './fit.ts';

/** Worker thread entry (see fit-thread.ts): fits once on `workerData`, posts the model, exits. */
parentPort?.postMessage(fitProjection(workerData as FitInput));
