import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Pool } from '../src/shared/db/pool.ts';
import { LORELEY_BIN, NODE, processTree, readCmdline, type Proc } from './harness.ts';

/**
 * Where every process of a stalled run is, in one text: the job rows and the queue's jobs by state,
 * the workers' presence rows, the database's sessions and waiting locks, each process (and its
 * children: git, commands) with its kernel wait channel and stack, the lock files under the run's
 * directory, the tail of every JSONL log, and `loreley status`. Written when a benchmark sees no
 * progress for a while, so a stall seen once can be read afterwards (the run's directory is kept
 * with LORELEY_BENCH_KEEP=1, and its processes are left alive).
 */

export interface StallScene {
  readonly pool: Pool;
  readonly experimentId: string;
  readonly queueName: string;
  readonly bossSchema: string;
  readonly procs: readonly Proc[];
  /** The run's directory: lock files and logs are looked for below it. */
  readonly root: string;
  readonly env: Record<string, string>;
}

export async function stallReport(scene: StallScene): Promise<string> {
  const sections: string[] = [`stall report at ${new Date().toISOString()}`];
  const section = async (title: string, body: () => string | Promise<string>) => {
    let text: string;
    try {
      text = await body();
    } catch (error) {
      text = `(could not be read: ${error instanceof Error ? error.message : String(error)})`;
    }
    sections.push(`== ${title}\n${text.trimEnd()}`);
  };
  const table = async (sql: string, params: unknown[] = []) => {
    const { rows } = await scene.pool.query(sql, params);
    return rows.map((row) => JSON.stringify(row)).join('\n') || '(none)';
  };

  await section('evolution_jobs by status', () =>
    table(`SELECT status, count(*)::int AS n, max(finished_at) AS last_finished FROM evolution_jobs WHERE experiment_id = $1 GROUP BY status ORDER BY status`, [scene.experimentId]));
  await section('evolution_jobs running or with an error', () =>
    table(`SELECT id, status, attempts, worker_id, started_at, left(last_error, 200) AS last_error FROM evolution_jobs
            WHERE experiment_id = $1 AND (status = 'running' OR last_error IS NOT NULL) ORDER BY started_at DESC NULLS LAST LIMIT 20`, [scene.experimentId]));
  await section('queue jobs by state', () =>
    table(`SELECT state, count(*)::int AS n FROM ${quoteIdent(scene.bossSchema)}.job WHERE name = $1 GROUP BY state ORDER BY state`, [scene.queueName]));
  await section('workers', () =>
    table(`SELECT worker_id, pid, state, current_job_id, last_heartbeat FROM workers WHERE experiment_id = $1 ORDER BY worker_id`, [scene.experimentId]));
  await section('database sessions (not idle)', () =>
    table(`SELECT pid, application_name, state, wait_event_type, wait_event, now() - xact_start AS in_transaction, left(query, 160) AS query
             FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' AND pid <> pg_backend_pid()`));
  await section('database locks waited for', () =>
    table(`SELECT l.pid, l.locktype, l.mode, l.relation::regclass::text AS relation, a.application_name, left(a.query, 120) AS query
             FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted`));
  await section('processes (wait channel, kernel stack)', () => scene.procs.map((proc) => describeTree(proc)).join('\n'));
  await section('lock files under the run directory', () => lockFiles(scene.root).join('\n') || '(none)');
  await section('JSONL logs (last 6 lines each)', () => logTails(scene.root).join('\n') || '(none)');
  await section('loreley status', () =>
    execFileSync(NODE, [LORELEY_BIN, 'status'], { env: scene.env, cwd: scene.root, encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] }));
  return `${sections.join('\n\n')}\n`;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return '?';
  }
}

function describeTree(proc: Proc): string {
  const lines = [`${proc.name} (pid ${proc.pid}, ${proc.isRunning() ? 'running' : 'exited'})`];
  for (const stat of processTree(proc.pid)) {
    const state = read(`/proc/${stat.pid}/stat`).replace(/^.*\) /, '').split(' ')[0];
    lines.push(`  ${stat.pid} [${state}] wchan=${read(`/proc/${stat.pid}/wchan`)} ${readCmdline(stat.pid).join(' ').slice(0, 200)}`);
    const stack = read(`/proc/${stat.pid}/stack`);
    if (stack !== '?' && stack !== '') lines.push(...stack.split('\n').slice(0, 6).map((line) => `      ${line}`));
  }
  return lines.join('\n');
}

/**
 * The files below `directory` whose name `wanted` accepts, depth first; directories that `skip`
 * names (object stores, the database cluster: large, nothing to read) are not entered.
 */
function filesBelow(directory: string, wanted: (name: string) => boolean, skip: (name: string) => boolean = () => false, depth = 0): string[] {
  let entries;
  try {
    entries = readdirSync(directory, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((entry) => {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) return depth < 8 && !skip(entry.name) ? filesBelow(full, wanted, skip, depth + 1) : [];
    return wanted(entry.name) ? [full] : [];
  });
}

/** Every `*.lock` file (git's and Loreley's) below `root`, with its age and content. */
function lockFiles(root: string): string[] {
  const isLock = (name: string) => /\.lock$|\.lock\./.test(name) || name === 'gc.pid';
  return filesBelow(root, isLock, (name) => name === 'objects' || name === 'pg').map((full) => {
    const age = existsSync(full) ? ((Date.now() - statSync(full).mtimeMs) / 1000).toFixed(1) : '?';
    return `${full} (${age} s old): ${read(full).slice(0, 200)}`;
  });
}

function logTails(root: string): string[] {
  return filesBelow(path.join(root, 'logs'), (name) => name.endsWith('.jsonl'))
    .flatMap((full) => [`-- ${full}`, ...read(full).split('\n').slice(-6).map((line) => `   ${line.slice(0, 400)}`)]);
}
