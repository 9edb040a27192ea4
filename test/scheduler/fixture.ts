import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { randomUUID } from 'node:crypto';
import { insertJob, markRunning, markSucceeded } from '../../src/shared/db/jobs.ts';
import { withTransaction, type Pool } from '../../src/shared/db/pool.ts';
import { upsertMetrics, type MetricValue } from '../../src/shared/db/results.ts';
import { openExperimentDatabase } from '../../src/shared/experiment-database.ts';
import type { PgBoss } from '../../src/shared/queue.ts';
import { loadSettings, type Settings } from '../../src/shared/settings/index.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

/**
 * A real database, queue and git remote for scheduler and archive tests; nothing is mocked. The
 * database and queue are opened by `openExperimentDatabase`, as a worker opens them.
 */

export const silentLogger = pino({ level: 'silent' });

export interface Fixture {
  readonly url: string;
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly remote: string;
  readonly rootCommit: string;
  readonly root: string;
  /** Settings for the same database and remote with other environment values. */
  settingsWith(env: Record<string, string>): Settings;
  close(): Promise<void>;
}

export interface FixtureOptions {
  readonly env?: Record<string, string>;
  readonly files?: Record<string, string>;
  /** Keep the experiment's queues (default true); false deletes the queue, so sending to it fails. */
  readonly queues?: boolean;
}

export async function createFixture(options: FixtureOptions = {}): Promise<Fixture> {
  const url = await createTestDatabase();
  const { remote, commit, root } = createRemote(options.files ?? { 'main.js': 'export const radius = 0.1;\n', 'README.md': '# test\n' });
  const baseEnv: Record<string, string> = {
    EXPERIMENT_ID: 'scheduler-test',
    DATABASE_URL: url,
    WORKER_REPO_REMOTE_URL: remote,
    WORKER_REPO_WORKTREE: path.join(root, 'clone'),
    WORKER_EVALUATOR_COMMAND: 'true',
    WORKER_AGENT_COMMAND: 'true',
    LORELEY_DATA_DIR: path.join(root, '.loreley'),
    LOG_CONSOLE: 'false',
    MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics',
    MAPELITES_FEATURE_DIMENSIONS: 'sum_radii:0:2.7,validity:0:1',
    // The archive tests check grid cells; the CVT default has its own tests (test/archive/cvt.test.ts).
    MAPELITES_ARCHIVE_TYPE: 'grid',
    MAPELITES_ARCHIVE_CELLS_PER_DIM: '10',
    ...options.env,
  };
  const settingsWith = (env: Record<string, string>) => loadSettings({ env: { ...baseEnv, ...env }, cwd: root, dotenv: false });
  const settings = settingsWith({});
  const database = await openExperimentDatabase({ settings, applicationName: 'loreley-test', supervise: false });
  if (options.queues === false) await database.boss.deleteQueue(settings.queue.name);
  return {
    url, settings, pool: database.pool, boss: database.boss, remote, rootCommit: commit, root, settingsWith,
    close: () => database.close({ graceful: false }),
  };
}

/**
 * What a worker does when a job succeeds, through the worker's own SQL: the row claimed by an
 * attempt, its metrics stored and the attempt marked succeeded (awaiting ingestion).
 */
export async function completeJob(pool: Pool, experimentId: string, jobId: string, commit: string, metrics: Record<string, number>): Promise<void> {
  const values: MetricValue[] = Object.entries(metrics).map(([name, value]) => ({ name, value }));
  const attempt = randomUUID();
  await withTransaction(pool, async (client) => {
    await markRunning(client, jobId, { workerId: 'worker-test', host: 'test-host', queueJobId: attempt });
    await upsertMetrics(client, experimentId, commit, jobId, values);
    if (!(await markSucceeded(client, jobId, attempt, commit))) throw new Error(`job ${jobId} could not be marked succeeded`);
  });
}

/**
 * A job as a worker on `host` holds it: the row queued and sent, the queue job fetched (active)
 * and the row claimed by that attempt. Nothing runs it: a lost worker, or a live one, as the test
 * then makes its heartbeat look.
 */
export async function runningJob(fixture: Fixture, host: string): Promise<{ id: string; queueJobId: string }> {
  const queue = fixture.settings.queue.name;
  const job = await insertJob(fixture.pool, { experimentId: fixture.settings.experiment.uuid, baseCommit: fixture.rootCommit });
  const queueJobId = await fixture.boss.send(queue, { jobId: job.id });
  if (!queueJobId) throw new Error('the queue refused the job');
  await fixture.pool.query(`UPDATE evolution_jobs SET status = 'queued', queue_job_id = $2 WHERE id = $1`, [job.id, queueJobId]);
  const [fetched] = await fixture.boss.fetch(queue, { batchSize: 1 });
  if (fetched?.id !== queueJobId) throw new Error(`fetched ${fetched?.id ?? 'nothing'} instead of ${queueJobId}`);
  await markRunning(fixture.pool, job.id, { workerId: 'worker0001', host, queueJobId });
  return { id: job.id, queueJobId };
}

export async function failJob(pool: Pool, jobId: string): Promise<void> {
  await pool.query(`UPDATE evolution_jobs SET status = 'failed', finished_at = now(), last_error = 'test failure' WHERE id = $1`, [jobId]);
}

/**
 * Makes a commit on top of `base` with `files` changed (null deletes) and pushes it to the remote
 * as a job branch; returns its hash.
 */
export function pushCommit(remote: string, base: string, files: Record<string, string | null>, branch: string): string {
  const work = path.join(tempDir('loreley-commit-'), 'work');
  git(path.dirname(work), 'clone', '--quiet', remote, work);
  git(work, 'checkout', '--quiet', '--detach', base);
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(work, name);
    if (content === null) git(work, 'rm', '--quiet', name);
    else {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, content);
    }
  }
  git(work, 'add', '--all');
  git(work, 'commit', '--quiet', '--allow-empty', '-m', `change ${branch}`);
  const commit = git(work, 'rev-parse', 'HEAD');
  git(work, 'push', '--quiet', 'origin', `HEAD:refs/heads/${branch}`);
  return commit;
}
