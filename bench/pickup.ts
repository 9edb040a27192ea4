import { createExperiment, nodeCommands, startWorker, whileRunning } from './experiment.ts';
import { jitter, ms, NODE, ratio, summary, wallMs, type Benchmark, type Row } from './harness.ts';
import { startRawWorker } from './raw-pgboss.ts';

/**
 * Pickup latency: from `boss.send` to the moment an idle worker starts the job, one job at a
 * time with the worker idle in between.
 *
 * - Baseline: a bare pg-boss worker process (LISTEN/NOTIFY, notify queue, batchSize 1), measured
 *   to the moment its handler runs.
 * - Loreley: `loreley worker`, measured to `evolution_jobs.started_at`, which the worker's claim
 *   transaction sets (the row locked, checked and marked running): the job has started.
 *
 * Both ends are wall-clock times on one machine: the bench's clock just before `send`, and the
 * worker's (or the database's) clock at the start, with sub-millisecond precision.
 */
export const pickup: Benchmark = {
  name: 'pickup',
  description: 'send → job started, idle worker (p50/p95), Loreley worker vs raw pg-boss worker',
  async run(harness) {
    const jobs = harness.pick(40, 10);
    const warmup = harness.pick(3, 2);
    const experiment = await createExperiment(harness, { label: 'pickup', commands: nodeCommands(NODE) });
    try {
      harness.progress('raw pg-boss worker: starting');
      const raw = await startRawWorker(harness, experiment, `bench.raw.pickup`);
      const rawSamples: number[] = [];
      for (let i = 0; i < warmup + jobs; i += 1) {
        await jitter(100, 200);
        const sentAt = wallMs();
        const id = await raw.send();
        const receivedAt = await raw.received(id);
        if (i >= warmup) rawSamples.push(receivedAt - sentAt);
      }
      await raw.stop();
      const base = summary(rawSamples);
      harness.progress(`raw pg-boss: ${jobs} jobs, p50 ${ms(base.p50)}, p95 ${ms(base.p95)}`);

      harness.progress('loreley worker: starting');
      const worker = await startWorker(harness, experiment);
      const samples: number[] = [];
      for (let i = 0; i < warmup + jobs; i += 1) {
        const jobId = await experiment.insertJob();
        await jitter(100, 200);
        const sentAt = wallMs();
        await experiment.send(jobId);
        const { job } = await whileRunning(worker, experiment.waitDone(jobId, 'bench-worker'));
        if (i >= warmup) samples.push(job.startedAt! - sentAt);
        if ((i + 1) % 10 === 0) harness.progress(`loreley: ${i + 1}/${warmup + jobs} jobs`);
      }
      await worker.stop();
      const loreley = summary(samples);
      harness.progress(`loreley: ${jobs} jobs, p50 ${ms(loreley.p50)}, p95 ${ms(loreley.p95)}`);

      const rows: Row[] = [
        {
          benchmark: 'pickup p50 (send → job started)',
          loreley: ms(loreley.p50),
          baseline: `${ms(base.p50)} raw pg-boss`,
          ratio: ratio(loreley.p50, base.p50),
          target: '< 10 ms',
          pass: loreley.p50 < 10,
        },
        {
          benchmark: 'pickup p95',
          loreley: ms(loreley.p95),
          baseline: `${ms(base.p95)} raw pg-boss`,
          ratio: ratio(loreley.p95, base.p95),
          target: 'info',
          pass: undefined,
        },
      ];
      return rows;
    } finally {
      await experiment.close();
    }
  },
};
