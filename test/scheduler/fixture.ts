import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { migrate } from '../../src/shared/db/migrations/index.ts';
import { createPool, type Pool } from '../../src/shared/db/pool.ts';
import { upsertMetrics, type MetricValue } from '../../src/shared/db/results.ts';
import { ensureExperiment } from '../../src/shared/db/experiments.ts';
import { ensureQueues, PgBoss } from '../../src/shared/queue.ts';
import { loadSettings, type Settings } from '../../src/shared/settings/index.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

/** A real database, queue and git remote for scheduler and archive tests; nothing is mocked. */

export const silentLogger = pino({ level: 'silent' });

export interface Fixture {
  readonly url: string;
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss | undefined;
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
  /** Start a PgBoss (default true). */
  readonly boss?: boolean;
  /** Create the experiment's queues (default true). */
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
    MAPELITES_ARCHIVE_CELLS_PER_DIM: '10',
    ...options.env,
  };
  const settingsWith = (env: Record<string, string>) => loadSettings({ env: { ...baseEnv, ...env }, cwd: root, dotenv: false });
  const settings = settingsWith({});
  const pool = createPool({ url, settings: settings.database, applicationName: 'loreley-test' });
  await migrate(pool, settings.database.schema);
  await ensureExperiment(pool, settings.experiment);
  let boss: PgBoss | undefined;
  if (options.boss !== false) {
    boss = new PgBoss({ connectionString: url, schema: 'pgboss' });
    boss.on('error', () => undefined);
    await boss.start();
    if (options.queues !== false) await ensureQueues(boss, settings);
  }
  return {
    url, settings, pool, boss, remote, rootCommit: commit, root, settingsWith,
    async close() {
      await boss?.stop({ graceful: false, close: true });
      await pool.end();
    },
  };
}

/** What a worker does when a job succeeds: metrics stored, the row succeeded, awaiting ingestion. */
export async function completeJob(pool: Pool, experimentId: string, jobId: string, commit: string, metrics: Record<string, number>): Promise<void> {
  const values: MetricValue[] = Object.entries(metrics).map(([name, value]) => ({ name, value }));
  await upsertMetrics(pool, experimentId, commit, jobId, values);
  await pool.query(
    `UPDATE evolution_jobs SET status = 'succeeded', result_commit = $2, finished_at = now(), ingestion_status = 'pending' WHERE id = $1`,
    [jobId, commit],
  );
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
