import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { allFiles, pidAlive } from '../helpers/processes.ts';

/**
 * The audit every fault test ends with: whatever was done to the processes and the database, the
 * run's books must balance.
 *
 * - every evolution job is in a terminal state (`succeeded`, `failed`, `cancelled`), exactly one;
 * - no job is recorded twice: at most one commit card, one metric set and one successful queue
 *   completion per job, and a succeeded job has exactly one of each;
 * - the counts agree: succeeded jobs = queue jobs completed with a commit = commit cards of
 *   evolution jobs = ingestions recorded (when a scheduler ran to the end);
 * - nothing is left live in the queue (no created, retry or active queue job);
 * - no process is left: none whose command line or working directory is under the run's root,
 *   and none of the pids the test names;
 * - no worktree or local job branch is left in the host's base clone;
 * - no secret (the database password, API keys) in any stored row or any log file.
 *
 * `audit()` returns every problem found (one line each) and the counts; `assertAudit()` fails
 * with all of them at once. Used by the lifecycle and the containment fault tests and the soak.
 */

export interface AuditOptions {
  /** The experiment's database (the tables' schema is on its search path via `schema`). */
  readonly databaseUrl: string;
  readonly schema?: string;
  readonly bossSchema?: string;
  readonly experimentUuid: string;
  readonly queueName: string;
  /** Everything the run wrote lives under here (logs, clones, worktrees, agent records). */
  readonly root: string;
  /** The host's base clone (`WORKER_REPO_WORKTREE`): worktrees live in `<clone>-worktrees`. */
  readonly baseClone?: string;
  /** Directories whose files are searched for secrets (the run's logs). */
  readonly logDirs?: readonly string[];
  /** Strings that must appear nowhere: the database password, API keys. */
  readonly secrets?: readonly string[];
  /** Pids that must be gone (workers, agents, evaluators the test saw). */
  readonly pids?: readonly number[];
  /** A scheduler ingested the results: every succeeded job must have its ingestion recorded. */
  readonly expectIngestion?: boolean;
  /** Processes to ignore in the leftover scan (e.g. a database server the test keeps under root). */
  readonly ignorePids?: readonly number[];
}

export interface AuditCounts {
  readonly jobs: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly cancelled: number;
  readonly queueCompletedWithCommit: number;
  readonly commitCards: number;
  readonly ingested: number;
  readonly handedBack: number;
}

export interface AuditReport {
  readonly problems: string[];
  readonly counts: AuditCounts;
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export async function audit(options: AuditOptions): Promise<AuditReport> {
  const problems: string[] = [];
  const schema = options.schema ?? 'loreley';
  const bossSchema = options.bossSchema ?? 'pgboss';
  const client = new pg.Client({ connectionString: options.databaseUrl });
  await client.connect();
  let counts: AuditCounts;
  try {
    const jobs = (
      await client.query<{ id: string; kind: string; status: string; result_commit: string | null; queue_job_id: string | null; ingestion_status: string | null; last_error: string | null }>(
        `SELECT id, kind, status, result_commit, queue_job_id, ingestion_status, last_error FROM ${schema}.evolution_jobs WHERE experiment_id = $1`,
        [options.experimentUuid],
      )
    ).rows;
    const byId = new Map(jobs.map((job) => [job.id, job]));
    for (const job of jobs) {
      if (!TERMINAL.has(job.status)) problems.push(`job ${job.id} (${job.kind}) is ${job.status}, not in a terminal state${job.last_error ? ` (last error: ${job.last_error})` : ''}`);
      if (job.status === 'succeeded' && !job.result_commit) problems.push(`job ${job.id} succeeded without a result commit`);
    }

    const cards = (
      await client.query<{ job_id: string; n: number }>(
        `SELECT job_id::text, count(*)::int AS n FROM ${schema}.commit_cards WHERE experiment_id = $1 AND job_id IS NOT NULL GROUP BY job_id`,
        [options.experimentUuid],
      )
    ).rows;
    const cardsByJob = new Map(cards.map((row) => [row.job_id, row.n]));
    for (const [jobId, n] of cardsByJob) {
      if (n > 1) problems.push(`job ${jobId} has ${n} commit cards (recorded twice)`);
      const job = byId.get(jobId);
      if (!job) problems.push(`commit card for unknown job ${jobId}`);
      else if (job.status !== 'succeeded') problems.push(`job ${jobId} is ${job.status} but has a commit card`);
    }
    const metricCommits = (
      await client.query<{ job_id: string; commits: number }>(
        `SELECT job_id::text, count(DISTINCT commit_hash)::int AS commits FROM ${schema}.metrics WHERE experiment_id = $1 AND job_id IS NOT NULL GROUP BY job_id`,
        [options.experimentUuid],
      )
    ).rows;
    for (const row of metricCommits) if (row.commits > 1) problems.push(`job ${row.job_id} has metrics for ${row.commits} commits (recorded twice)`);

    const queueJobs = (
      await client.query<{ id: string; state: string; data: { jobId?: string } | null; output: Record<string, unknown> | null }>(
        `SELECT id::text, state::text, data, output FROM ${bossSchema}.job WHERE name = $1`,
        [options.queueName],
      )
    ).rows;
    const completions = new Map<string, number>();
    let handedBack = 0;
    for (const queueJob of queueJobs) {
      if (['created', 'retry', 'active'].includes(queueJob.state)) {
        problems.push(`queue job ${queueJob.id} (job ${queueJob.data?.jobId ?? '?'}) is still ${queueJob.state}`);
      }
      const output = queueJob.output ?? {};
      if (queueJob.state === 'completed' && typeof output.commit === 'string' && queueJob.data?.jobId) {
        completions.set(queueJob.data.jobId, (completions.get(queueJob.data.jobId) ?? 0) + 1);
      }
      if (output.handedBack === true || queueJob.state === 'cancelled') handedBack += 1;
    }
    for (const [jobId, n] of completions) if (n > 1) problems.push(`job ${jobId} was completed with a commit by ${n} queue jobs (recorded twice)`);

    const succeeded = jobs.filter((job) => job.status === 'succeeded');
    for (const job of succeeded) {
      if (job.kind !== 'baseline' && (completions.get(job.id) ?? 0) !== 1) problems.push(`job ${job.id} succeeded but ${completions.get(job.id) ?? 0} queue jobs completed with its commit`);
      if ((cardsByJob.get(job.id) ?? 0) !== 1) problems.push(`job ${job.id} succeeded with ${cardsByJob.get(job.id) ?? 0} commit cards`);
      if (options.expectIngestion && (job.ingestion_status === null || job.ingestion_status === 'pending')) problems.push(`job ${job.id} succeeded but its ingestion is ${job.ingestion_status ?? 'missing'}`);
    }
    for (const [jobId] of completions) {
      if (byId.get(jobId)?.status !== 'succeeded') problems.push(`a queue job completed with a commit for job ${jobId}, which is ${byId.get(jobId)?.status ?? 'unknown'}`);
    }

    counts = {
      jobs: jobs.length,
      succeeded: succeeded.length,
      failed: jobs.filter((job) => job.status === 'failed').length,
      cancelled: jobs.filter((job) => job.status === 'cancelled').length,
      queueCompletedWithCommit: [...completions.values()].reduce((a, b) => a + b, 0),
      commitCards: [...cardsByJob.values()].reduce((a, b) => a + b, 0),
      ingested: jobs.filter((job) => job.ingestion_status !== null && job.ingestion_status !== 'pending').length,
      handedBack,
    };

    if (options.secrets && options.secrets.length > 0) {
      problems.push(...(await secretsInRows(client, [schema, bossSchema], options.secrets)));
    }
  } finally {
    await client.end();
  }

  problems.push(...leftoverProcesses(options));
  if (options.baseClone) problems.push(...leftoverWorktrees(options.baseClone));
  for (const directory of options.logDirs ?? []) problems.push(...secretsInFiles(directory, options.secrets ?? []));
  return { problems, counts };
}

/** Fails with every problem the audit found, one per line. */
export function assertAudit(report: AuditReport): void {
  if (report.problems.length === 0) return;
  throw new Error(`the audit found ${report.problems.length} problem(s):\n  ${report.problems.join('\n  ')}\ncounts: ${JSON.stringify(report.counts)}`);
}

async function secretsInRows(client: pg.Client, schemas: readonly string[], secrets: readonly string[]): Promise<string[]> {
  const problems: string[] = [];
  const tables = (
    await client.query<{ schema: string; name: string }>(
      `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables WHERE table_schema = ANY($1) AND table_type = 'BASE TABLE'`,
      [schemas],
    )
  ).rows;
  for (const table of tables) {
    for (const secret of secrets) {
      if (!secret) continue;
      const { rows } = await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM "${table.schema}"."${table.name}" t WHERE strpos(t::text, $1) > 0`,
        [secret],
      );
      if (rows[0].n > 0) problems.push(`a secret (${mask(secret)}) is stored in ${rows[0].n} row(s) of ${table.schema}.${table.name}`);
    }
  }
  return problems;
}

function secretsInFiles(directory: string, secrets: readonly string[]): string[] {
  const problems: string[] = [];
  for (const file of allFiles(directory)) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const secret of secrets) if (secret && text.includes(secret)) problems.push(`a secret (${mask(secret)}) is in ${file}`);
  }
  return problems;
}

function mask(secret: string): string {
  return `${secret.slice(0, 3)}…(${secret.length} chars)`;
}

/** Processes under the run's root (by command line or working directory), and named pids still alive. */
function leftoverProcesses(options: AuditOptions): string[] {
  const problems: string[] = [];
  const ignore = new Set([process.pid, ...(options.ignorePids ?? [])]);
  const root = path.resolve(options.root);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (ignore.has(pid) || !pidAlive(pid)) continue;
    let cmdline = '';
    let cwd = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      // Exited while we looked, or not ours to read.
    }
    if (cmdline.includes(root) || cwd === root || cwd.startsWith(`${root}/`)) problems.push(`process ${pid} is left running: ${cmdline.slice(0, 200)} (cwd ${cwd})`);
  }
  for (const pid of options.pids ?? []) {
    if (!ignore.has(pid) && pidAlive(pid)) problems.push(`process ${pid} is still alive`);
  }
  return [...new Set(problems)];
}

/** Job worktrees beside the base clone, registered worktrees, and local `evolution/job/*` branches. */
function leftoverWorktrees(baseClone: string): string[] {
  const problems: string[] = [];
  const worktrees = `${baseClone}-worktrees`;
  if (existsSync(worktrees)) {
    for (const name of readdirSync(worktrees)) problems.push(`worktree directory left behind: ${path.join(worktrees, name)}`);
  }
  if (existsSync(path.join(baseClone, '.git'))) {
    const registered = execFileSync('git', ['worktree', 'list', '--porcelain'], { cwd: baseClone, encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.startsWith('worktree '))
      .map((line) => line.slice('worktree '.length))
      .filter((directory) => path.resolve(directory) !== path.resolve(baseClone));
    for (const directory of registered) problems.push(`worktree still registered in the base clone: ${directory}`);
    const branches = execFileSync('git', ['for-each-ref', '--format=%(refname:short)', 'refs/heads/evolution/job/'], { cwd: baseClone, encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
    for (const branch of branches) problems.push(`local job branch left in the base clone: ${branch}`);
  }
  return problems;
}
