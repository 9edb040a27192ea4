import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createExperiment, NOOP_COMMANDS, nodeCommands, startWorker, whileRunning, type Commands } from './experiment.ts';
import { FIXTURES, jitter, ms, NODE, ratio, summary, wallMs, type Benchmark, type Harness, type Row } from './harness.ts';
import { PlainGitJobs } from './plain-git.ts';
import { startRawWorker } from './raw-pgboss.ts';

/**
 * What Loreley adds to a job beyond the work itself.
 *
 * 1. Job wall time with a real (if quick) agent and evaluator, each a `node -e` process: Loreley's
 *    whole job, from the claim (`started_at`) to the worker's idle presence after the worktree is
 *    removed, against the plain-git baseline doing the same steps with the git CLI.
 * 2. The same with an agent and evaluator that do (nearly) nothing (`sh -c 'echo y >> prog.txt'`,
 *    `echo '{"score": 1}'`), measured from `send` to the worker idle again, against raw pg-boss's
 *    no-op send → completed round trip plus the plain-git no-op job: the closest thing to
 *    "pg-boss and git and nothing else".
 * 3. For information, that no-op round trip against raw pg-boss alone.
 */
export const jobOverhead: Benchmark = {
  name: 'job',
  description: 'per-job wall time vs plain git; no-op round trip vs raw pg-boss (+ plain git)',
  async run(harness) {
    const jobs = harness.pick(20, 5);
    const warmup = harness.pick(2, 1);
    const rows: Row[] = [];

    // 1. Real agent and evaluator processes.
    const node = await loreleyJobs(harness, { label: 'job_node', commands: nodeCommands(NODE), jobs, warmup });
    const plainNode = plainGit(harness, 'plain git (node agent + evaluator)', node.experimentRoot, node.remote, node.baseCommit, nodeCommands(NODE), jobs, warmup);
    rows.push({
      benchmark: 'job wall p50, node agent + evaluator',
      loreley: ms(node.wall.p50),
      baseline: `${ms(plainNode.p50)} plain git`,
      ratio: ratio(node.wall.p50, plainNode.p50),
      target: '≤ 1.5× plain git',
      pass: node.wall.p50 <= 1.5 * plainNode.p50,
    });

    // 2 and 3. Agent and evaluator doing nothing.
    const noop = await loreleyJobs(harness, { label: 'job_noop', commands: NOOP_COMMANDS, jobs, warmup, rawQueue: 'bench.raw.noop' });
    const plainNoop = plainGit(harness, 'plain git (no-op agent + evaluator)', noop.experimentRoot, noop.remote, noop.baseCommit, NOOP_COMMANDS, jobs, warmup);
    const raw = noop.raw!;
    const floor = raw.p50 + plainNoop.p50;
    rows.push(
      {
        benchmark: 'job wall p50, no-op agent + evaluator',
        loreley: ms(noop.wall.p50),
        baseline: `${ms(plainNoop.p50)} plain git`,
        ratio: ratio(noop.wall.p50, plainNoop.p50),
        target: 'info',
        pass: undefined,
      },
      {
        benchmark: 'no-op job round trip p50 (send → idle)',
        loreley: ms(noop.roundTrip.p50),
        baseline: `${ms(floor)} pg-boss + plain git`,
        ratio: ratio(noop.roundTrip.p50, floor),
        target: '≤ 1.5× pg-boss + git',
        pass: noop.roundTrip.p50 <= 1.5 * floor,
      },
      {
        benchmark: 'no-op queue round trip p50',
        loreley: ms(noop.roundTrip.p50),
        baseline: `${ms(raw.p50)} raw pg-boss`,
        ratio: ratio(noop.roundTrip.p50, raw.p50),
        target: 'info',
        pass: undefined,
      },
    );
    return rows;
  },
};

interface LoreleyFigures {
  readonly experimentRoot: string;
  readonly remote: string;
  readonly baseCommit: string;
  /** started_at → idle presence. */
  readonly wall: ReturnType<typeof summary>;
  /** send → idle presence. */
  readonly roundTrip: ReturnType<typeof summary>;
  /** Raw pg-boss no-op send → completed, when asked for. */
  readonly raw: ReturnType<typeof summary> | undefined;
}

async function loreleyJobs(
  harness: Harness,
  options: { label: string; commands: Commands; jobs: number; warmup: number; rawQueue?: string },
): Promise<LoreleyFigures> {
  const experiment = await createExperiment(harness, { label: options.label, commands: options.commands });
  try {
    let raw: ReturnType<typeof summary> | undefined;
    if (options.rawQueue) {
      harness.progress('raw pg-boss no-op round trips: starting');
      const worker = await startRawWorker(harness, experiment, options.rawQueue);
      const samples: number[] = [];
      for (let i = 0; i < options.warmup + options.jobs; i += 1) {
        await jitter(100, 200);
        const sentAt = wallMs();
        const id = await worker.send();
        const completedAt = await worker.completed(id);
        if (i >= options.warmup) samples.push(completedAt - sentAt);
      }
      await worker.stop();
      raw = summary(samples);
      harness.progress(`raw pg-boss no-op send → completed: p50 ${ms(raw.p50)}`);
    }

    harness.progress(`loreley worker (${options.label}): starting`);
    const worker = await startWorker(harness, experiment);
    const wall: number[] = [];
    const roundTrip: number[] = [];
    const stored: number[] = [];
    for (let i = 0; i < options.warmup + options.jobs; i += 1) {
      const jobId = await experiment.insertJob();
      await jitter(100, 200);
      const sentAt = wallMs();
      await experiment.send(jobId);
      const { job, idleAt } = await whileRunning(worker, experiment.waitDone(jobId, 'bench-worker'));
      if (i >= options.warmup) {
        wall.push(idleAt - job.startedAt!);
        roundTrip.push(idleAt - sentAt);
        stored.push(job.finishedAt! - job.startedAt!);
      }
    }
    await worker.stop();
    const figures = { wall: summary(wall), roundTrip: summary(roundTrip) };
    harness.progress(
      `loreley (${options.label}): job wall p50 ${ms(figures.wall.p50)} (claim → result stored ${ms(summary(stored).p50)}), send → idle p50 ${ms(figures.roundTrip.p50)}`,
    );
    return { experimentRoot: experiment.root, remote: experiment.remote, baseCommit: experiment.baseCommit, raw, ...figures };
  } finally {
    await experiment.close();
  }
}

function plainGit(harness: Harness, label: string, directory: string, remote: string, baseCommit: string, commands: Commands, jobs: number, warmup: number): ReturnType<typeof summary> {
  const plain = new PlainGitJobs({ remote, baseCommit, directory, commands });
  const samples: number[] = [];
  for (let i = 0; i < warmup + jobs; i += 1) {
    const wall = plain.job();
    if (i >= warmup) samples.push(wall);
  }
  const figures = summary(samples);
  harness.progress(`${label}: job wall p50 ${ms(figures.p50)}`);
  return figures;
}

/**
 * What it costs a worker to start a job's command (`echo '{"score": 1}'`, through runCommand), in
 * each way this machine offers: CPU of the worker-sized process (`fixtures/command-start.mjs`, which
 * loads what a worker loads) and of every process it started, the launcher included, per command;
 * medians of interleaved blocks. The row: pid-namespace commands from the launcher
 * (src/shared/launcher.ts) against the same commands each spawned with a fork of that process and
 * an `unshare` exec (WORKER_COMMAND_LAUNCHER=false). Info rows: bubblewrap (the default sandbox,
 * always spawned) and a bare process-group spawn.
 */
export const commandStart: Benchmark = {
  name: 'spawn',
  description: 'CPU to start a job command: from the launcher vs a fork of the worker (+ unshare), bubblewrap, bare',
  async run(harness) {
    const perBlock = harness.pick(100, 30);
    const rounds = harness.pick(8, 3);
    harness.progress(`command start: ${rounds} rounds of ${perBlock} commands per way, interleaved`);
    const output = execFileSync(NODE, [path.join(FIXTURES, 'command-start.mjs'), String(perBlock), String(rounds), harness.tempDir('command-start')], { encoding: 'utf8', maxBuffer: 1024 * 1024 });
    const { rssMb, ways } = JSON.parse(output) as { rssMb: number; ways: Record<string, { cpuMs: number[]; wallMs: number[] }> };
    const median = (name: string) => {
      const way = ways[name];
      return way ? { cpu: summary(way.cpuMs).p50, wall: summary(way.wallMs).p50 } : undefined;
    };
    const figure = (way: { cpu: number; wall: number }) => `${way.cpu.toFixed(2)} CPU-ms (wall ${ms(way.wall)})`;
    for (const name of Object.keys(ways)) harness.progress(`${name}: ${figure(median(name)!)} per command, from a ${Math.round(rssMb)} MB process`);
    const rows: Row[] = [];
    const launcher = median('pid-namespace, launcher');
    const spawned = median('pid-namespace, spawned');
    const bare = median('process-group, spawned');
    if (launcher && spawned) {
      rows.push({
        benchmark: `command start, PID namespace: from the launcher vs a fork of a ${Math.round(rssMb)} MB worker + unshare`,
        loreley: figure(launcher),
        baseline: figure(spawned),
        ratio: ratio(launcher.cpu, spawned.cpu),
        target: 'info',
        pass: undefined,
      });
    }
    const bubblewrap = median('bubblewrap, spawned');
    if (bubblewrap && bare) {
      rows.push({
        benchmark: 'command start, bubblewrap (the default sandbox, spawned; its namespace teardown, done by an orphan, not counted) vs a bare process-group spawn',
        loreley: figure(bubblewrap),
        baseline: figure(bare),
        ratio: ratio(bubblewrap.cpu, bare.cpu),
        target: 'info',
        pass: undefined,
      });
    }
    if (launcher && bare) {
      rows.push({
        benchmark: 'command start, PID namespace from the launcher vs a bare process-group spawn (no namespace)',
        loreley: figure(launcher),
        baseline: figure(bare),
        ratio: ratio(launcher.cpu, bare.cpu),
        target: 'info',
        pass: undefined,
      });
    }
    return rows;
  },
};
