import { jsonlFiles, waitFor as pollUntil } from '../test/helpers/processes.ts';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../src/shared/embedded-database.ts';

/**
 * What every benchmark shares: one embedded PostgreSQL for the whole run (a fresh database per
 * benchmark), temp directories, spawned process groups, progress lines, and clean-up of all of it,
 * also on Ctrl+C. Measurement helpers (percentiles, /proc sampling, JSONL log tailing) live here
 * too, so each benchmark file reads as the experiment it runs.
 */

export const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** The Node running the bench (Node 24 under `npm run bench`); every process we start uses it. */
export const NODE = process.execPath;
export const LORELEY_BIN = path.join(ROOT, 'bin', 'loreley.js');
export const SUPERVISOR_BIN = path.join(ROOT, 'bin', 'loreley-supervisor.js');
export const FIXTURES = path.join(ROOT, 'bench', 'fixtures');

/** One line of the final table. A ratio is Loreley's figure over the baseline's. */
export interface Row {
  readonly benchmark: string;
  readonly loreley: string;
  readonly baseline: string;
  readonly ratio: number | undefined;
  readonly target: string;
  /** undefined: a figure reported for information, held to no target. */
  readonly pass: boolean | undefined;
}

export interface Benchmark {
  readonly name: string;
  readonly description: string;
  run(harness: Harness): Promise<Row[]>;
}

export interface Proc {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly name: string;
  /** The last 64 KB of stdout and stderr together, for error messages. */
  output(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
  /** Signals the whole process group. */
  signalGroup(signal: NodeJS.Signals): void;
  /** SIGTERM to the group, SIGKILL after `graceMs`; resolves once the leader is gone. */
  stop(graceMs?: number): Promise<void>;
}

const OUTPUT_KEEP = 64 * 1024;

export class Harness {
  readonly quick: boolean;
  private readonly started = performance.now();
  private readonly dirs: string[] = [];
  private readonly procs = new Set<Proc>();
  private database: EmbeddedDatabase | undefined;
  /** Kept so a clean-up during start-up still stops the server once it is up. */
  private databaseStarting: Promise<EmbeddedDatabase> | undefined;
  private databaseDir: string | undefined;
  private databaseCount = 0;
  private scope = 'bench';

  /**
   * LORELEY_BENCH_KEEP=1: temp dirs (logs, clones, the database cluster) are kept, and a benchmark
   * that sees a stall leaves its processes running for inspection instead of failing the run.
   */
  readonly keep: boolean;

  constructor(options: { quick: boolean; keep?: boolean }) {
    this.quick = options.quick;
    this.keep = options.keep ?? process.env.LORELEY_BENCH_KEEP === '1';
  }

  /** `full` iterations normally, `quick` with --quick. */
  pick<T>(full: T, quick: T): T {
    return this.quick ? quick : full;
  }

  setScope(scope: string): void {
    this.scope = scope;
  }

  progress(message: string): void {
    const seconds = ((performance.now() - this.started) / 1000).toFixed(1).padStart(6);
    process.stderr.write(`[${seconds}s] ${this.scope}: ${message}\n`);
  }

  tempDir(prefix: string): string {
    const dir = mkdtempSync(path.join(os.tmpdir(), `loreley-bench-${prefix}-`));
    chmodSync(dir, 0o755);
    this.dirs.push(dir);
    return dir;
  }

  /** A new empty database on the run's embedded PostgreSQL (started on first use). */
  async createDatabase(label: string): Promise<string> {
    if (!this.databaseStarting) {
      this.databaseDir = this.tempDir('pg');
      this.progress('starting an embedded PostgreSQL');
      this.databaseStarting = startEmbeddedDatabase({ directory: this.databaseDir });
    }
    this.database = await this.databaseStarting;
    const name = `bench_${label.replace(/[^a-z0-9_]/g, '_')}_${process.pid}_${this.databaseCount++}`;
    const admin = new pg.Client(this.database.url);
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
    const url = new URL(this.database.url);
    url.pathname = `/${name}`;
    return url.toString();
  }

  /** The postmaster's pid, to account for the database's own CPU. */
  postmasterPid(): number | undefined {
    if (!this.databaseDir) return undefined;
    const file = path.join(this.databaseDir, 'data', 'postmaster.pid');
    if (!existsSync(file)) return undefined;
    return Number(readFileSync(file, 'utf8').split('\n')[0]);
  }

  /**
   * Starts a process in a process group of its own (so stop() takes its children too), with
   * exactly `env` (nothing inherited), its output kept for diagnostics.
   */
  spawn(name: string, args: readonly string[], options: { env: Record<string, string>; cwd: string; ipc?: boolean }): Proc {
    const stdio: Array<'ignore' | 'pipe' | 'ipc'> = ['ignore', 'pipe', 'pipe'];
    if (options.ipc) stdio.push('ipc');
    const child = spawn(NODE, args, { cwd: options.cwd, env: options.env, stdio, detached: true });
    let output = '';
    const collect = (chunk: string) => {
      output = (output + chunk).slice(-OUTPUT_KEEP);
    };
    child.stdout!.setEncoding('utf8').on('data', collect);
    child.stderr!.setEncoding('utf8').on('data', collect);
    let running = true;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => {
        running = false;
        resolve({ code, signal });
      });
      child.on('error', (error) => {
        running = false;
        collect(`\n[spawn error] ${error.message}\n`);
        resolve({ code: null, signal: null });
      });
    });
    const signalGroup = (signal: NodeJS.Signals) => {
      // A group id stays taken while any member lives; once none does, the number is not ours.
      if (!groupAlive(child.pid!)) return;
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // The group is gone.
      }
    };
    const procs = this.procs;
    const proc: Proc = {
      child,
      pid: child.pid!,
      name,
      output: () => output,
      exited,
      isRunning: () => running,
      signalGroup,
      async stop(graceMs = 5000) {
        if (running) {
          signalGroup('SIGTERM');
          await Promise.race([exited, sleep(graceMs)]);
        }
        // Whatever the leader left in its group (cluster children, commands) goes too.
        signalGroup('SIGKILL');
        await Promise.race([exited, sleep(2000)]);
        procs.delete(proc);
      },
    };
    procs.add(proc);
    return proc;
  }

  /** Kills every process group we started, stops the database, removes every temp dir. */
  async cleanup(): Promise<void> {
    await this.stopProcesses();
    const database = await this.databaseStarting?.catch(() => undefined);
    this.databaseStarting = undefined;
    this.database = undefined;
    if (database) {
      // Kept: stopped, its cluster left in place for a post-mortem.
      await (this.keep ? database.stop() : database.remove()).catch((error) => process.stderr.write(`bench: the embedded PostgreSQL did not stop cleanly: ${String(error)}\n`));
    }
    const dirs = this.dirs.splice(0);
    if (this.keep) {
      if (dirs.length > 0) process.stderr.write(`bench: LORELEY_BENCH_KEEP=1: kept ${dirs.join(' ')}\n`);
      return;
    }
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }

  /** Stops every process still running, so what one benchmark left cannot weigh on the next. */
  async stopProcesses(): Promise<void> {
    await Promise.all([...this.procs].map((proc) => proc.stop(1000).catch(() => undefined)));
    this.procs.clear();
  }

  /** SIGKILL everything at once; for a second Ctrl+C. */
  killAllNow(): void {
    for (const proc of this.procs) proc.signalGroup('SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting and statistics

/** The tests' poller, with the bench's finer default interval. */
export function waitFor<T>(what: string, probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 30_000, intervalMs = 20): Promise<T> {
  return pollUntil(what, probe, timeoutMs, intervalMs);
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes on this machine. */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

/** A random pause in [min, max) ms, so a sequence of jobs does not lock step with any poll. */
export function jitter(min: number, max: number): Promise<void> {
  return sleep(min + Math.random() * (max - min));
}

/** Linear-interpolated percentile of `values` (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

export function summary(values: readonly number[]): { p50: number; p95: number; min: number; max: number; n: number } {
  return { p50: percentile(values, 50), p95: percentile(values, 95), min: Math.min(...values), max: Math.max(...values), n: values.length };
}

export function ms(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value < 10 ? `${value.toFixed(2)} ms` : value < 100 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
}

export function ratio(loreley: number, baseline: number): number | undefined {
  return baseline > 0 && Number.isFinite(loreley) && Number.isFinite(baseline) ? loreley / baseline : undefined;
}

// ---------------------------------------------------------------------------------------------
// /proc sampling (Linux)

let clockTicks: number | undefined;

/** Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
export function clkTck(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

export interface ProcStat {
  readonly pid: number;
  readonly ppid: number;
  readonly pgrp: number;
  /** utime + stime, in clock ticks. */
  readonly ticks: number;
  /** cutime + cstime: the children it has reaped, in clock ticks. */
  readonly childTicks: number;
  /** When the process started, in ticks since boot: with the pid, identifies one process. */
  readonly startTime: number;
  readonly comm: string;
}

export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' ');
  // fields[0] is field 3 (state) of proc(5).
  return { pid, ppid: Number(fields[1]), pgrp: Number(fields[2]), ticks: Number(fields[11]) + Number(fields[12]), childTicks: Number(fields[13]) + Number(fields[14]), startTime: Number(fields[19]), comm };
}

/** Resident set size in bytes (VmRSS), or undefined when the process is gone. */
export function readRssBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

function allProcesses(): ProcStat[] {
  const all: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readStat(Number(name));
    if (stat) all.push(stat);
  }
  return all;
}

/** Whether any process is still in process group `pgid`. */
export function groupAlive(pgid: number): boolean {
  return allProcesses().some((stat) => stat.pgrp === pgid);
}

/** `root` and every process descending from it. */
export function processTree(root: number): ProcStat[] {
  const all = allProcesses();
  const children = new Map<number, ProcStat[]>();
  for (const stat of all) {
    const list = children.get(stat.ppid) ?? [];
    list.push(stat);
    children.set(stat.ppid, list);
  }
  const rootStat = all.find((stat) => stat.pid === root);
  if (!rootStat) return [];
  const tree: ProcStat[] = [rootStat];
  for (let i = 0; i < tree.length; i += 1) tree.push(...(children.get(tree[i].pid) ?? []));
  return tree;
}

/**
 * CPU-ms used so far by the tree under each of `roots` (absent: the root is gone): every live
 * process's own time plus what it reaped (a child's time moves into its parent's cutime when it
 * exits, so a tree's sum only grows, short of processes reparented away from it). One /proc scan.
 */
export function treeCpuMs(roots: readonly number[]): Map<number, number> {
  const all = allProcesses();
  const children = new Map<number, ProcStat[]>();
  for (const stat of all) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat]);
  const result = new Map<number, number>();
  for (const root of all.filter((stat) => roots.includes(stat.pid))) {
    const tree = [root];
    for (let i = 0; i < tree.length; i += 1) tree.push(...(children.get(tree[i].pid) ?? []));
    result.set(root.pid, (tree.reduce((sum, stat) => sum + stat.ticks + stat.childTicks, 0) * 1000) / clkTck());
  }
  return result;
}

export function readCmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * What `bin/loreley.js` runs: the compiled build in dist/ when it is current, else the TypeScript
 * sources (bin/entry.js decides; older bins always ran the sources).
 */
export async function binEntry(): Promise<string> {
  const entryFile = path.join(ROOT, 'bin', 'entry.js');
  if (!existsSync(entryFile)) return 'src/ (TypeScript, type stripping)';
  const module = (await import(new URL(`file://${entryFile}`).href)) as { entry?: (relative: string) => string };
  if (typeof module.entry !== 'function') return 'unknown';
  return module.entry('cli/loreley').includes('/dist/') ? 'dist/ (compiled JavaScript)' : 'src/ (TypeScript, type stripping)';
}

/**
 * Which module a supervised child runs, relative to the repository: `dist/cli/child.js` (the
 * compiled build, when current) or `src/cli/child.ts` (type stripping). It matters for start-up
 * time and memory, so the bench says which one it measured.
 */
export function childModule(pid: number): string {
  const module = readCmdline(pid).find((arg) => /child\.(ts|js)$/.test(arg));
  return module ? path.relative(ROOT, module) : 'unknown';
}

// ---------------------------------------------------------------------------------------------
// JSONL logs

export interface LogLine {
  readonly time: string;
  readonly msg: string;
  readonly [key: string]: unknown;
}

/**
 * Follows every `.jsonl` file under a directory (rotated files included), returning only lines
 * it has not returned before.
 */
export class LogTail {
  private readonly directory: string;
  private readonly offsets = new Map<string, number>();
  readonly lines: LogLine[] = [];

  constructor(directory: string) {
    this.directory = directory;
  }

  /** Reads what was appended since the last call; returns the new lines (also kept in `lines`). */
  poll(): LogLine[] {
    const fresh: LogLine[] = [];
    for (const file of jsonlFiles(this.directory)) {
      const size = statSync(file).size;
      const offset = this.offsets.get(file) ?? 0;
      if (size <= offset) continue;
      const text = readFileSync(file).subarray(offset, size).toString('utf8');
      const end = text.lastIndexOf('\n');
      if (end < 0) continue;
      this.offsets.set(file, offset + Buffer.byteLength(text.slice(0, end + 1)));
      for (const line of text.slice(0, end).split('\n')) {
        if (line.trim() === '') continue;
        try {
          fresh.push(JSON.parse(line) as LogLine);
        } catch {
          // A torn line cannot happen with synchronous writes; skip rather than fail the run.
        }
      }
    }
    this.lines.push(...fresh);
    return fresh;
  }
}

/**
 * The child's pid on a supervisor line about a child (`child ready`, `child state`): logged as
 * `childPid`, since `pid` is every line's own process (older supervisors wrote `pid`).
 */
export function childPidOf(line: LogLine, supervisorPid: number): number | undefined {
  const pid = Number(line.childPid ?? line.pid);
  return Number.isInteger(pid) && pid > 0 && pid !== supervisorPid ? pid : undefined;
}

