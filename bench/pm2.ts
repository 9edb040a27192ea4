import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createExperiment, NOOP_COMMANDS, whileRunning, type Experiment } from './experiment.ts';
import { mb, TreeSampler } from './idle.ts';
import {
  clkTck,
  jitter,
  LogTail,
  LORELEY_BIN,
  ms,
  NODE,
  processTree,
  ratio,
  readStat,
  ROOT,
  summary,
  SUPERVISOR_BIN,
  waitFor,
  type Benchmark,
  type Harness,
  type LogLine,
  type Proc,
  type Row,
} from './harness.ts';

/**
 * The supervisor against pm2 running the same four workers, side by side in one run, on one
 * database and one experiment (eight idle workers on one queue):
 *
 * - Loreley: `loreley-supervisor --workers 4 --no-scheduler` (cluster children running
 *   `cli/child`), restart backoff 0 so a SIGKILL is restarted at once, as pm2 does.
 * - pm2: its own daemon (PM2_HOME in a temp dir, started untimed with `pm2 ping`, killed at the
 *   end) running four `loreley worker --worker-id pm2wNNNN` apps (`bin/loreley.js`, fork mode,
 *   `restart_delay: 0`), the entry an operator gives pm2 to run workers without the supervisor.
 *
 * "Ready" is the same signal on both sides: the worker's own `worker online` JSONL line (after its
 * pool, queue and presence row are up), with its pid. Figures: start → all four ready (from the
 * command: the supervisor's spawn, `pm2 start`); SIGKILL of one worker → its replacement ready
 * (kills alternate between the sides, one at a time, 10 each, 4 with --quick); the idle window
 * (20 s, 8 s with --quick, both trees sampled at once): the manager's RSS and CPU (supervisor vs
 * pm2's God daemon) and the whole tree's CPU; stop → every process exited (SIGTERM to the
 * supervisor; `pm2 stop all`).
 */
export const pm2: Benchmark = {
  name: 'pm2',
  description: 'supervisor vs pm2 running the same 4 workers: start, SIGKILL → back, stop, manager RSS and idle CPU',
  async run(harness) {
    const kills = harness.pick(10, 4);
    const windowSeconds = harness.pick(20, 8);
    const experiment = await createExperiment(harness, {
      label: 'pm2',
      commands: NOOP_COMMANDS,
      env: {
        SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '0',
        SUPERVISOR_RESTART_RESET_AFTER_SECONDS: '0',
        SUPERVISOR_CRASH_LOOP_MAX_RESTARTS: '1000',
      },
    });
    const pm2Home = harness.tempDir('pm2-home');
    const pm2 = new Pm2(harness, experiment, pm2Home);
    try {
      const workerLogs = new LogTail(path.join(experiment.root, 'logs', experiment.settings.experiment.namespace, 'worker'));
      const onlineOf = (workerId: string, after: number): LogLine | undefined =>
        workerLogs.lines.filter((line) => line.msg === 'worker online' && line.workerId === workerId && Date.parse(line.time) >= after).at(-1);
      const allOnline = (ids: readonly string[], after: number) => (workerLogs.poll(), ids.every((id) => onlineOf(id, after)));

      // Both sides load the same files: one untimed run puts them in the page cache first.
      await runNode(harness, [LORELEY_BIN, '--help'], experiment);
      await pm2.command(['ping']);
      harness.progress(`pm2 ${pm2.version()} daemon up (pid ${pm2.daemonPid()})`);

      const loreleyIds = [1, 2, 3, 4].map((i) => `worker${String(i).padStart(4, '0')}`);
      const pm2Ids = [1, 2, 3, 4].map((i) => `pm2w${String(i).padStart(4, '0')}`);

      harness.progress('start: loreley-supervisor --workers 4 --no-scheduler');
      let startedAt = Date.now();
      const supervisor = harness.spawn('loreley-supervisor', [SUPERVISOR_BIN, '--workers', '4', '--no-scheduler'], { env: experiment.env, cwd: experiment.root });
      await whileRunning(supervisor, waitFor('4 supervised workers online', () => allOnline(loreleyIds, startedAt), 60_000, 5));
      const loreleyStart = Math.max(...loreleyIds.map((id) => Date.parse(onlineOf(id, startedAt)!.time))) - startedAt;
      harness.progress(`loreley: all 4 online ${loreleyStart} ms after the spawn`);

      harness.progress('start: pm2 start (4 apps: loreley worker)');
      const ecosystem = pm2.writeEcosystem(pm2Ids);
      startedAt = Date.now();
      await pm2.command(['start', ecosystem]);
      await waitFor('4 pm2 workers online', () => allOnline(pm2Ids, startedAt), 60_000, 5);
      const pm2Start = Math.max(...pm2Ids.map((id) => Date.parse(onlineOf(id, startedAt)!.time))) - startedAt;
      harness.progress(`pm2: all 4 online ${pm2Start} ms after pm2 start`);

      await sleep(2000);
      harness.progress(`idle: sampling both trees for ${windowSeconds} s`);
      const daemon = pm2.daemonPid();
      const loreleyTree = new TreeSampler(() => processTree(supervisor.pid).map((stat) => stat.pid));
      const pm2Tree = new TreeSampler(() => processTree(daemon).map((stat) => stat.pid));
      const windowStart = performance.now();
      for (const sampler of [loreleyTree, pm2Tree]) sampler.sample();
      while (performance.now() - windowStart < windowSeconds * 1000) {
        await sleep(1000);
        for (const sampler of [loreleyTree, pm2Tree]) sampler.sample();
      }
      const seconds = (performance.now() - windowStart) / 1000;
      const perMinute = (ticks: number) => (ticks / clkTck()) * (60 / seconds);
      const supervisorCpu = perMinute(loreleyTree.ticks((pid) => pid === supervisor.pid));
      const daemonCpu = perMinute(pm2Tree.ticks((pid) => pid === daemon));
      const loreleyTreeCpu = perMinute(loreleyTree.ticks(() => true));
      const pm2TreeCpu = perMinute(pm2Tree.ticks(() => true));
      const supervisorRss = loreleyTree.maxRss((pid) => pid === supervisor.pid);
      const daemonRss = pm2Tree.maxRss((pid) => pid === daemon);
      const loreleyChildRss = loreleyTree.maxRss((pid) => pid !== supervisor.pid);
      const pm2ChildRss = pm2Tree.maxRss((pid) => pid !== daemon);
      harness.progress(
        `idle: supervisor ${mb(supervisorRss)}, ${supervisorCpu.toFixed(3)} CPU-s/min (tree ${loreleyTreeCpu.toFixed(3)}, workers up to ${mb(loreleyChildRss)}); ` +
          `pm2 daemon ${mb(daemonRss)}, ${daemonCpu.toFixed(3)} CPU-s/min (tree ${pm2TreeCpu.toFixed(3)}, workers up to ${mb(pm2ChildRss)})`,
      );

      const loreleyBack: number[] = [];
      const pm2Back: number[] = [];
      for (let i = 0; i < kills; i += 1) {
        const index = i % 4;
        loreleyBack.push(await killAndWait(harness, workerLogs, onlineOf, loreleyIds[index], supervisor.pid, `loreley kill ${i + 1}/${kills}`));
        pm2Back.push(await killAndWait(harness, workerLogs, onlineOf, pm2Ids[index], daemon, `pm2 kill ${i + 1}/${kills}`));
      }

      harness.progress('stop: SIGTERM to the supervisor');
      workerLogs.poll();
      const loreleyPids = [supervisor.pid, ...loreleyIds.map((id) => Number(onlineOf(id, 0)!.pid))];
      let stopAt = performance.now();
      process.kill(supervisor.pid, 'SIGTERM');
      await waitFor('the supervisor and its workers to exit', () => loreleyPids.every((pid) => !running(pid)), 60_000, 5);
      const loreleyStop = performance.now() - stopAt;
      harness.progress(`loreley: every process exited ${Math.round(loreleyStop)} ms after SIGTERM`);

      harness.progress('stop: pm2 stop all');
      const pm2Pids = pm2Ids.map((id) => Number(onlineOf(id, 0)!.pid));
      stopAt = performance.now();
      await pm2.command(['stop', 'all']);
      await waitFor('the pm2 workers to exit', () => pm2Pids.every((pid) => !running(pid)), 60_000, 5);
      const pm2Stop = performance.now() - stopAt;
      harness.progress(`pm2: every worker exited ${Math.round(pm2Stop)} ms after pm2 stop all`);

      const back = summary(loreleyBack);
      const pm2BackSummary = summary(pm2Back);
      const rows: Row[] = [
        { benchmark: 'start → 4 workers ready', loreley: ms(loreleyStart), baseline: `${ms(pm2Start)} pm2 start`, ratio: ratio(loreleyStart, pm2Start), target: 'info', pass: undefined },
        {
          benchmark: 'SIGKILL → worker back and ready (p50)',
          loreley: ms(back.p50),
          baseline: `${ms(pm2BackSummary.p50)} pm2`,
          ratio: ratio(back.p50, pm2BackSummary.p50),
          target: '≤ 0.5× pm2',
          pass: back.p50 <= 0.5 * pm2BackSummary.p50,
        },
        { benchmark: 'SIGKILL → back (max)', loreley: ms(back.max), baseline: `${ms(pm2BackSummary.max)} pm2`, ratio: ratio(back.max, pm2BackSummary.max), target: 'info', pass: undefined },
        { benchmark: 'stop → all exited', loreley: ms(loreleyStop), baseline: `${ms(pm2Stop)} pm2 stop`, ratio: ratio(loreleyStop, pm2Stop), target: 'info', pass: undefined },
        { benchmark: 'manager RSS (idle)', loreley: mb(supervisorRss), baseline: `${mb(daemonRss)} pm2 daemon`, ratio: ratio(supervisorRss, daemonRss), target: 'info', pass: undefined },
        {
          benchmark: 'manager idle CPU',
          loreley: `${supervisorCpu.toFixed(3)} CPU-s/min`,
          baseline: `${daemonCpu.toFixed(3)} pm2 daemon`,
          ratio: ratio(supervisorCpu, daemonCpu),
          target: 'info',
          pass: undefined,
        },
        {
          benchmark: 'tree idle CPU (manager + 4 workers)',
          loreley: `${loreleyTreeCpu.toFixed(3)} CPU-s/min`,
          baseline: `${pm2TreeCpu.toFixed(3)} pm2`,
          ratio: ratio(loreleyTreeCpu, pm2TreeCpu),
          target: 'info',
          pass: undefined,
        },
        {
          benchmark: 'worker RSS (max)',
          loreley: `${mb(loreleyChildRss)} (cli/child)`,
          baseline: `${mb(pm2ChildRss)} (loreley worker under pm2)`,
          ratio: ratio(loreleyChildRss, pm2ChildRss),
          target: 'info',
          pass: undefined,
        },
      ];
      await supervisor.exited;
      return rows;
    } finally {
      await pm2.kill();
      await experiment.close();
    }
  },
};

/** True while `pid` is a live process (a zombie is not). */
function running(pid: number): boolean {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** SIGKILLs the worker `workerId` (only a child of `parent`) and times until its replacement is online. */
async function killAndWait(
  harness: Harness,
  logs: LogTail,
  onlineOf: (workerId: string, after: number) => LogLine | undefined,
  workerId: string,
  parent: number,
  label: string,
): Promise<number> {
  logs.poll();
  const victim = Number(onlineOf(workerId, 0)?.pid);
  if (readStat(victim)?.ppid !== parent) throw new Error(`${workerId}: pid ${victim} is not a child of ${parent}`);
  await jitter(300, 600);
  const killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  const line = await waitFor(
    `${workerId} back after SIGKILL`,
    () => {
      logs.poll();
      const online = onlineOf(workerId, killedAt);
      return online && Number(online.pid) !== victim ? online : undefined;
    },
    30_000,
    5,
  );
  const back = Date.parse(line.time) - killedAt;
  harness.progress(`${label} (${workerId}): back in ${back} ms`);
  return back;
}

async function runNode(harness: Harness, args: readonly string[], experiment: Experiment): Promise<void> {
  const proc: Proc = harness.spawn('warm-up', args, { env: experiment.env, cwd: experiment.root });
  await proc.exited;
}

/** The pm2 CLI and its daemon under a PM2_HOME of their own. */
class Pm2 {
  private readonly bin = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');
  private readonly harness: Harness;
  private readonly experiment: Experiment;
  private readonly home: string;

  constructor(harness: Harness, experiment: Experiment, home: string) {
    this.harness = harness;
    this.experiment = experiment;
    this.home = home;
  }

  command(args: readonly string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(NODE, [this.bin, ...args], { cwd: this.experiment.root, env: { ...this.experiment.env, PM2_HOME: this.home }, timeout: 120_000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`pm2 ${args.join(' ')}: ${error.message}\n${stderr.slice(-2000)}`));
        else resolve(stdout);
      });
    });
  }

  version(): string {
    return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', 'pm2', 'package.json'), 'utf8')) as { version: string }).version;
  }

  daemonPid(): number {
    return Number(readFileSync(path.join(this.home, 'pm2.pid'), 'utf8'));
  }

  /** Four `loreley worker` apps, restarted at once on a crash, their output discarded (the JSONL is the log). */
  writeEcosystem(workerIds: readonly string[]): string {
    const file = path.join(this.experiment.root, 'bench-pm2.config.json');
    const apps = workerIds.map((workerId) => ({
      name: workerId,
      script: LORELEY_BIN,
      args: ['worker', '--worker-id', workerId],
      interpreter: NODE,
      exec_mode: 'fork',
      cwd: this.experiment.root,
      autorestart: true,
      restart_delay: 0,
      min_uptime: 0,
      max_restarts: 1000,
      kill_timeout: 30_000,
      out_file: '/dev/null',
      error_file: '/dev/null',
      env: this.experiment.env,
    }));
    writeFileSync(file, JSON.stringify({ apps }, null, 2));
    return file;
  }

  /** `pm2 kill`, and SIGKILL for a daemon that did not go. */
  async kill(): Promise<void> {
    const pidFile = path.join(this.home, 'pm2.pid');
    if (!existsSync(pidFile)) return;
    const daemon = this.daemonPid();
    const children = processTree(daemon).map((stat) => stat.pid);
    await this.command(['kill']).catch((error: Error) => this.harness.progress(`pm2 kill: ${error.message.split('\n')[0]}`));
    for (const pid of [daemon, ...children]) {
      if (running(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
    }
  }
}
