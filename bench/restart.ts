import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { logDirectory } from '../src/shared/logger.ts';
import { createExperiment, NOOP_COMMANDS, whileRunning } from './experiment.ts';
import { childModule, childPidOf, FIXTURES, jitter, LogTail, ms, NODE, ratio, readStat, summary, SUPERVISOR_BIN, waitFor, type Benchmark, type LogLine } from './harness.ts';

/**
 * Restart time: `loreley-supervisor --workers 2 --no-scheduler` (with its spare worker, the default); a worker child is SIGKILLed and
 * timed until its replacement reports ready (the supervisor's `child ready` log line for that slot
 * with a new pid). The backoff the supervisor applied (its `restarting in N ms` line) is reported
 * apart and taken off: the target is 500 ms plus the backoff. The restart policy is set to back
 * off 0 ms and to reset after every crash, so repeated kills neither grow the backoff nor mark
 * the slot errored.
 *
 * Baseline: a bare node:cluster primary killing and re-forking a child that only sends one IPC
 * message (fixtures/cluster-restart.mjs), in the same run.
 */
export const restart: Benchmark = {
  name: 'restart',
  description: 'SIGKILLed worker child → replacement ready, minus backoff, vs a bare cluster re-fork',
  async run(harness) {
    const kills = harness.pick(10, 4);
    const experiment = await createExperiment(harness, {
      label: 'restart',
      commands: NOOP_COMMANDS,
      env: {
        SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '0',
        SUPERVISOR_RESTART_RESET_AFTER_SECONDS: '0',
        SUPERVISOR_CRASH_LOOP_MAX_RESTARTS: '1000',
        SUPERVISOR_STATUS_INTERVAL_SECONDS: '0',
      },
    });
    try {
      const log = new LogTail(logDirectory(experiment.settings.logs, experiment.settings.experiment, 'supervisor', 'supervisor'));
      const readyOf = (slot: string, after: number): LogLine | undefined =>
        log.lines.filter((line) => line.msg === 'child ready' && line.slot === slot && Date.parse(line.time) >= after).at(-1);
      const pidOf = (line: LogLine | undefined): number => {
        const pid = line ? childPidOf(line, supervisor.pid) : undefined;
        if (pid === undefined) throw new Error(`no child pid on the supervisor's 'child ready' line: ${JSON.stringify(line)}`);
        return pid;
      };

      harness.progress('supervisor --workers 2 --no-scheduler: starting');
      const supervisor = harness.spawn('loreley-supervisor', [SUPERVISOR_BIN, '--workers', '2', '--no-scheduler'], { env: experiment.env, cwd: experiment.root });
      const slots = ['worker0001', 'worker0002'];
      await whileRunning(supervisor, waitFor('both workers ready', () => (log.poll(), slots.every((slot) => readyOf(slot, 0))), 60_000));
      const firstPid = pidOf(readyOf(slots[0], 0));
      harness.progress(`children run ${childModule(firstPid)}`);
      await sleep(1000);

      const totals: number[] = [];
      const backoffs: number[] = [];
      const startups: number[] = [];
      /** Per kill: whether the slot took the spare worker (SUPERVISOR_SPARE_WORKER) or forked. */
      const bySpare: boolean[] = [];
      for (let i = 0; i < kills; i += 1) {
        const slot = slots[i % slots.length];
        log.poll();
        const victim = pidOf(readyOf(slot, 0));
        // Only ever a child of the supervisor we started.
        if (readStat(victim)?.ppid !== supervisor.pid) throw new Error(`pid ${victim} of ${slot} is not a child of the supervisor`);
        await jitter(500, 800);
        const killedAt = Date.now();
        process.kill(victim, 'SIGKILL');
        const ready = await whileRunning(
          supervisor,
          waitFor(`${slot} to be back after SIGKILL`, () => {
            log.poll();
            const line = readyOf(slot, killedAt);
            return line && pidOf(line) !== victim ? line : undefined;
          }, 30_000, 5),
        );
        const restarting = log.lines.find((line) => line.slot === slot && typeof line.delayMs === 'number' && Date.parse(line.time) >= killedAt);
        const backoff = Number(restarting?.delayMs ?? 0);
        const total = Date.parse(ready.time) - killedAt;
        const spare = log.lines.some((line) => line.msg === 'the spare worker takes the slot' && line.slot === slot && Date.parse(line.time) >= killedAt);
        totals.push(total);
        backoffs.push(backoff);
        bySpare.push(spare);
        if (restarting) startups.push(Date.parse(ready.time) - Date.parse(restarting.time) - backoff);
        harness.progress(`kill ${i + 1}/${kills} (${slot}): back in ${total} ms (backoff ${backoff} ms, ${spare ? 'the spare took the slot' : 'forked'})`);
      }
      await supervisor.stop();

      harness.progress('baseline: bare node:cluster kill → re-fork → first message');
      const output = execFileSync(NODE, [path.join(FIXTURES, 'cluster-restart.mjs'), String(kills)], { encoding: 'utf8', timeout: 60_000 });
      const base = summary((JSON.parse(output.trim().split('\n').pop()!) as { samples: number[] }).samples);
      harness.progress(`baseline: p50 ${ms(base.p50)}`);

      const netAll = totals.map((total, i) => total - backoffs[i]);
      const net = summary(netAll);
      const spareNet = netAll.filter((_, i) => bySpare[i]);
      const forkNet = netAll.filter((_, i) => !bySpare[i]);
      harness.progress(
        `loreley: ${spareNet.length} kill(s) found the spare ready (p50 ${ms(summary(spareNet).p50)}), ${forkNet.length} forked (p50 ${ms(summary(forkNet).p50)}): ` +
          'kills closer together than a spare takes to start find none',
      );
      const backoff = summary(backoffs);
      const startup = startups.length > 0 ? summary(startups) : undefined;
      if (startup) harness.progress(`loreley: fork → ready p50 ${ms(startup.p50)} of the ${ms(net.p50)} (the rest: exit noticed, log line)`);
      return [
        {
          benchmark: 'restart p50 (kill → ready, minus backoff)',
          loreley: `${ms(net.p50)} (+${Math.round(backoff.p50)} ms backoff)`,
          baseline: `${ms(base.p50)} bare cluster fork`,
          ratio: ratio(net.p50, base.p50),
          target: '< 500 ms + backoff',
          pass: net.p50 < 500,
        },
        {
          benchmark: 'restart max (minus backoff)',
          loreley: ms(net.max),
          baseline: `${ms(base.max)} bare cluster fork`,
          ratio: ratio(net.max, base.max),
          target: 'info',
          pass: undefined,
        },
      ];
    } finally {
      await experiment.close();
    }
  },
};
