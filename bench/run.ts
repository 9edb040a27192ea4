import os from 'node:os';
import { parseArgs } from 'node:util';
import { archiveScale } from './archive-scale.ts';
import { embedding } from './embedding.ts';
import { fullPath } from './full-path.ts';
import { binEntry, Harness, type Benchmark, type Row } from './harness.ts';
import { idle } from './idle.ts';
import { commandStart, jobOverhead } from './job-overhead.ts';
import { pickup } from './pickup.ts';
import { pm2 } from './pm2.ts';
import { queueScale } from './queue-scale.ts';
import { restart } from './restart.ts';

/**
 * `npm run bench [-- --quick] [-- --only <name>[,<name>]]`: runs the benchmarks in sequence and
 * prints one table. Every figure is set beside a baseline measured in the same run; targets are
 * printed as pass/fail but never fail the run (the exit code is 1 only when a benchmark could not
 * be measured). Progress goes to stderr, the table to stdout.
 */

const BENCHMARKS: readonly Benchmark[] = [pickup, jobOverhead, commandStart, restart, pm2, idle, archiveScale, queueScale, embedding, fullPath];

function usage(): string {
  return [
    'usage: node bench/run.ts [--quick] [--only <name>[,<name>...]]',
    '',
    '  --quick        fewer iterations, smaller N, shorter windows (a few minutes)',
    '  --only NAMES   run only these benchmarks (repeatable or comma-separated)',
    '',
    'benchmarks:',
    ...BENCHMARKS.map((b) => `  ${b.name.padEnd(8)} ${b.description}`),
  ].join('\n');
}

function parse(): { quick: boolean; only: string[] } {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n\n${usage()}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${usage()}\n`);
    process.exit(0);
  }
  const only = (values.only ?? []).flatMap((value) => value.split(',')).map((name) => name.trim()).filter(Boolean);
  const unknown = only.filter((name) => !BENCHMARKS.some((b) => b.name === name));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(', ')}\n\n${usage()}\n`);
    process.exit(2);
  }
  return { quick: values.quick, only };
}

/** The one-minute load average (everything on the machine, this bench included). */
function loadAverage(): number {
  return os.loadavg()[0];
}

function formatTable(rows: readonly Row[]): string {
  const header = ['benchmark', 'Loreley', 'baseline', 'ratio', 'target', 'result'];
  const cells = rows.map((row) => [
    row.benchmark,
    row.loreley,
    row.baseline,
    row.ratio === undefined ? '—' : `${row.ratio.toFixed(2)}×`,
    row.target,
    row.pass === undefined ? 'info' : row.pass ? 'pass' : 'FAIL',
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...cells.map((line) => line[column].length)));
  const line = (values: readonly string[]) => `| ${values.map((value, column) => value.padEnd(widths[column])).join(' | ')} |`;
  return [line(header), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}

const options = parse();
const selected = options.only.length > 0 ? BENCHMARKS.filter((b) => options.only.includes(b.name)) : BENCHMARKS;
const harness = new Harness({ quick: options.quick });

let interrupted = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (interrupted) {
    harness.killAllNow();
    process.exit(130);
  }
  interrupted = true;
  process.stderr.write(`\nbench: ${signal}: cleaning up (again to stop at once)\n`);
  void harness.cleanup().finally(() => process.exit(130));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const started = performance.now();
harness.setScope('bench');
harness.progress(
  `${selected.map((b) => b.name).join(', ')}${options.quick ? ' (quick)' : ''} on ${os.cpus().length} CPUs, Node ${process.versions.node}, ${os.platform()}-${os.arch()}`,
);
harness.progress(`Loreley's bins run ${await binEntry()}`);
const loadAtStart = loadAverage();
if (loadAtStart > os.cpus().length / 2) {
  harness.progress(`warning: load average ${loadAtStart.toFixed(2)} before starting: other work on this machine will make latencies noisy`);
}
const rows: Row[] = [];
let errors = 0;
try {
  for (const benchmark of selected) {
    harness.setScope(benchmark.name);
    const benchStarted = performance.now();
    try {
      rows.push(...(await benchmark.run(harness)));
      harness.progress(`done in ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
    } catch (error) {
      errors += 1;
      const message = error instanceof Error ? error.message : String(error);
      harness.progress(`could not be measured: ${message}`);
      rows.push({ benchmark: `${benchmark.name}: not measured`, loreley: message.split('\n')[0].slice(0, 80), baseline: '', ratio: undefined, target: '', pass: false });
    } finally {
      await harness.stopProcesses();
    }
  }
} finally {
  harness.setScope('bench');
  harness.progress('cleaning up');
  await harness.cleanup();
}

const seconds = ((performance.now() - started) / 1000).toFixed(0);
process.stdout.write(
  `\n${formatTable(rows)}\n\n${options.quick ? 'quick run' : 'full run'} in ${seconds} s on ${os.cpus().length} CPUs ` +
    `(load average ${loadAtStart.toFixed(2)} before, ${loadAverage().toFixed(2)} after, the bench's own load included); ratio = Loreley / baseline\n`,
);
process.exit(errors > 0 ? 1 : 0);
