import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { logDirectory } from '../src/shared/logger.ts';
import { createExperiment, NOOP_COMMANDS, whileRunning } from './experiment.ts';
import {
  childModule,
  childPidOf,
  clkTck,
  LogTail,
  processTree,
  ratio,
  readRssBytes,
  readStat,
  SUPERVISOR_BIN,
  waitFor,
  type Benchmark,
  type Harness,
  type Proc,
  type Row,
} from './harness.ts';

/**
 * The idle cost of a whole tree: `loreley-supervisor --workers N` with its scheduler, for N = 4 and
 * N = 16, once start-up has settled and no job is left, sampled from /proc over a window (30 s,
 * 10 s with --quick): utime+stime of the supervisor and every descendant, scaled to CPU-seconds
 * per minute, and the largest VmRSS any child reached.
 *
 * Baseline: N + 2 bare `node -e 'setInterval(…, 1000)'` processes (as many as the tree has),
 * sampled over the same window at the same time; both are idle, so sharing the window skews
 * neither. PostgreSQL's own CPU over the window is reported for information (it serves the
 * tree's polls).
 */
export const idle: Benchmark = {
  name: 'idle',
  description: 'idle tree (supervisor + 4 or 16 workers + scheduler): CPU-s/min and max child RSS vs bare node',
  async run(harness) {
    const rows: Row[] = [];
    for (const workers of [4, 16]) rows.push(...(await idleTree(harness, workers)));
    return rows;
  },
};

async function idleTree(harness: Harness, workers: number): Promise<Row[]> {
  const windowSeconds = harness.pick(30, 10);
  const experiment = await createExperiment(harness, {
    label: `idle${workers}`,
    commands: NOOP_COMMANDS,
    // No budget: a scheduler that plans jobs has nothing to plan, and the tree stays idle.
    env: { SCHEDULER_MAX_TOTAL_JOBS: '0' },
  });
  try {
    const log = new LogTail(logDirectory(experiment.settings.logs, experiment.settings.experiment, 'supervisor', 'supervisor'));
    harness.progress(`supervisor --workers ${workers} (with scheduler): starting`);
    const supervisor = harness.spawn('loreley-supervisor', [SUPERVISOR_BIN, '--workers', String(workers)], { env: experiment.env, cwd: experiment.root });
    const bare: Proc[] = [];
    for (let i = 0; i < workers + 2; i += 1) {
      bare.push(harness.spawn(`bare node ${i + 1}`, ['-e', 'setInterval(() => undefined, 1000)'], { env: { PATH: process.env.PATH ?? '' }, cwd: experiment.root }));
    }
    const slots = [...Array.from({ length: workers }, (_, i) => `worker${String(i + 1).padStart(4, '0')}`), 'scheduler0001'];
    await whileRunning(
      supervisor,
      waitFor('every child ready', () => {
        log.poll();
        return slots.every((slot) => log.lines.some((line) => line.msg === 'child ready' && line.slot === slot));
      }, 120_000),
    );
    const aChild = log.lines.find((line) => line.msg === 'child ready');
    const aChildPid = aChild ? childPidOf(aChild, supervisor.pid) : undefined;
    harness.progress(`every child ready (children run ${aChildPid ? childModule(aChildPid) : 'unknown'}); waiting for start-up to settle`);
    await whileRunning(
      supervisor,
      waitFor('no unfinished job', async () => {
        const { rows } = await experiment.pool.query<{ count: number }>(
          `SELECT count(*)::int AS count FROM evolution_jobs WHERE status IN ('pending', 'queued', 'running')`,
        );
        return rows[0].count === 0;
      }, 60_000, 250),
    );
    await sleep(harness.pick(5000, 2000));

    harness.progress(`sampling /proc for ${windowSeconds} s`);
    const tree = new TreeSampler(() => processTree(supervisor.pid).map((stat) => stat.pid));
    const floor = new TreeSampler(() => bare.map((proc) => proc.pid));
    const postmaster = harness.postmasterPid();
    const database = postmaster ? new TreeSampler(() => processTree(postmaster).map((stat) => stat.pid)) : undefined;
    const samplers = [tree, floor, database].filter((s): s is TreeSampler => s !== undefined);
    const started = performance.now();
    for (const sampler of samplers) sampler.sample();
    while (performance.now() - started < windowSeconds * 1000) {
      await sleep(1000);
      for (const sampler of samplers) sampler.sample();
    }
    const seconds = (performance.now() - started) / 1000;
    if (!supervisor.isRunning()) throw new Error(`the supervisor exited during the window:\n${supervisor.output().slice(-3000)}`);
    log.poll();
    const changes = tree.changes();
    if (changes.appeared + changes.vanished > 0) {
      harness.progress(`warning: the tree changed during the window (${changes.appeared} process(es) appeared, ${changes.vanished} vanished)`);
    }

    const perMinute = (sampler: TreeSampler) => (sampler.ticks() / clkTck()) * (60 / seconds);
    const treeCpu = perMinute(tree);
    const floorCpu = perMinute(floor);
    const slotOf = new Map(log.lines.filter((line) => line.msg === 'child ready').map((line) => [childPidOf(line, supervisor.pid), String(line.slot)]));
    const spares = new Set(log.lines.filter((line) => line.msg === 'spare worker ready').map((line) => childPidOf(line, supervisor.pid)));
    const isWorker = (pid: number) => slotOf.get(pid)?.startsWith('worker') ?? false;
    const isScheduler = (pid: number) => slotOf.get(pid)?.startsWith('scheduler') ?? false;
    const childRss = tree.maxRss(isWorker);
    const childUss = tree.maxUss(isWorker);
    const schedulerRss = tree.maxRss(isScheduler);
    const supervisorRss = tree.maxRss((pid) => pid === supervisor.pid);
    const floorRss = floor.maxRss(() => true);
    harness.progress(
      `tree ${treeCpu.toFixed(3)} CPU-s/min (${tree.processCount()} processes), max worker RSS ${mb(childRss)} (unique ${mb(childUss)}), ` +
        `scheduler RSS ${mb(schedulerRss)}, supervisor RSS ${mb(supervisorRss)}; ` +
        `bare node ${floorCpu.toFixed(3)} CPU-s/min, ${mb(floorRss)}`,
    );
    const breakdown = [...tree.rssByPid()]
      .map(([pid, rss]) => `${pid === supervisor.pid ? 'supervisor' : (slotOf.get(pid) ?? (spares.has(pid) ? 'spare worker' : `pid ${pid}`))} ${mb(rss)}`)
      .join(', ');
    harness.progress(`peak RSS by process: ${breakdown}`);
    for (const proc of bare) await proc.stop(1000);
    await supervisor.stop(10_000);

    const rows: Row[] = [
      {
        benchmark: `idle tree CPU (supervisor + ${workers} workers + scheduler)`,
        loreley: `${treeCpu.toFixed(3)} CPU-s/min`,
        baseline: `${floorCpu.toFixed(3)} (${workers + 2} bare node)`,
        ratio: ratio(treeCpu, floorCpu),
        target: '< 1 CPU-s/min',
        pass: treeCpu < 1,
      },
      {
        benchmark: `idle RSS per worker child (max, ${workers} workers)`,
        loreley: mb(childRss),
        baseline: `${mb(floorRss)} bare node`,
        ratio: ratio(childRss, floorRss),
        target: '≤ 60 MB',
        pass: childRss <= 60 * 1024 * 1024,
      },
      {
        benchmark: `idle unique memory per worker child (USS, max, ${workers} workers)`,
        loreley: mb(childUss),
        baseline: `${mb(floor.maxUss(() => true))} bare node`,
        ratio: ratio(childUss, floor.maxUss(() => true)),
        target: 'info',
        pass: undefined,
      },
      {
        benchmark: `idle scheduler RSS (${workers} workers)`,
        loreley: mb(schedulerRss),
        baseline: `${mb(floorRss)} bare node`,
        ratio: ratio(schedulerRss, floorRss),
        target: 'info',
        pass: undefined,
      },
      {
        benchmark: `idle supervisor RSS (${workers} workers)`,
        loreley: mb(supervisorRss),
        baseline: `${mb(floorRss)} bare node`,
        ratio: ratio(supervisorRss, floorRss),
        target: 'info',
        pass: undefined,
      },
    ];
    if (database) {
      rows.push({
        benchmark: `idle PostgreSQL CPU (all backends, ${workers} workers)`,
        loreley: `${perMinute(database).toFixed(3)} CPU-s/min`,
        baseline: '',
        ratio: undefined,
        target: 'info',
        pass: undefined,
      });
    }
    return rows;
  } finally {
    await experiment.close();
  }
}

export function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/**
 * CPU ticks and peak RSS of a changing set of processes, sampled over time. A process is keyed by
 * pid and start time, so a replaced one is counted as new (all its ticks fall in the window).
 */
export class TreeSampler {
  private readonly pids: () => number[];
  private readonly first = new Map<string, number>();
  private readonly last = new Map<string, number>();
  private readonly rss = new Map<string, { pid: number; max: number; maxUss: number }>();
  private samples = 0;
  /** Sample index at which each process was first and last seen. */
  private readonly seen = new Map<string, { first: number; last: number }>();

  constructor(pids: () => number[]) {
    this.pids = pids;
  }

  sample(): void {
    for (const pid of this.pids()) {
      const stat = readStat(pid);
      if (!stat) continue;
      const key = `${pid}:${stat.startTime}`;
      if (!this.first.has(key)) {
        this.first.set(key, this.samples === 0 ? stat.ticks : 0);
        this.seen.set(key, { first: this.samples, last: this.samples });
      }
      this.seen.get(key)!.last = this.samples;
      this.last.set(key, stat.ticks);
      const rss = readRssBytes(pid) ?? 0;
      const entry = this.rss.get(key) ?? { pid, max: 0, maxUss: 0 };
      entry.max = Math.max(entry.max, rss);
      entry.maxUss = Math.max(entry.maxUss, readUssBytes(pid) ?? 0);
      this.rss.set(key, entry);
    }
    this.samples += 1;
  }

  /** CPU ticks over the window of the processes `include` accepts (all by default). */
  ticks(include: (pid: number) => boolean = () => true): number {
    let total = 0;
    for (const [key, last] of this.last) if (include(Number(key.split(':')[0]))) total += last - this.first.get(key)!;
    return total;
  }

  maxRss(include: (pid: number) => boolean): number {
    let max = 0;
    for (const entry of this.rss.values()) if (include(entry.pid)) max = Math.max(max, entry.max);
    return max;
  }

  /** Peak unique set size (pages no other process maps: what one more such process costs). */
  maxUss(include: (pid: number) => boolean): number {
    let max = 0;
    for (const entry of this.rss.values()) if (include(entry.pid)) max = Math.max(max, entry.maxUss);
    return max;
  }

  /** Peak RSS of each process seen, by pid. */
  rssByPid(): Map<number, number> {
    const byPid = new Map<number, number>();
    for (const entry of this.rss.values()) byPid.set(entry.pid, Math.max(byPid.get(entry.pid) ?? 0, entry.max));
    return byPid;
  }

  processCount(): number {
    return this.last.size;
  }

  /** Processes that appeared after the first sample or were gone by the last. */
  changes(): { appeared: number; vanished: number } {
    const seen = [...this.seen.values()];
    return { appeared: seen.filter((s) => s.first > 0).length, vanished: seen.filter((s) => s.last < this.samples - 1).length };
  }
}

/**
 * Unique set size in bytes: Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup. RSS also
 * counts the pages of the node binary and libraries every Node process shares through the page
 * cache (~35 MB in a bare node, ~50 MB once pg and pg-boss have run); USS is what one more child
 * adds to the machine.
 */
function readUssBytes(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    let kb = 0;
    for (const match of text.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB/gm)) kb += Number(match[1]);
    return kb * 1024;
  } catch {
    return undefined;
  }
}
