import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getJob, insertJob, markQueued, type EvolutionJob, type NewJob } from '../../../src/shared/db/jobs.ts';
import { withTransaction, type Pool } from '../../../src/shared/db/pool.ts';
import { openExperimentDatabase } from '../../../src/shared/experiment-database.ts';
import { createConsoleLogger, type Logger } from '../../../src/shared/logger.ts';
import { sendEvolutionJob, type PgBoss } from '../../../src/shared/queue.ts';
import { QueueStatements } from '../../../src/shared/queue-statements.ts';
import { loadSettings, type Settings } from '../../../src/shared/settings/index.ts';
import type { MutationAgent } from '../../../src/worker/agent.ts';
import { EvolutionWorker, type JobOutcome } from '../../../src/worker/evolution-worker.ts';
import { WorkerRepository } from '../../../src/worker/repository.ts';
import { createTestDatabase } from '../../helpers/database.ts';
import { createRemote } from '../../helpers/git.ts';

/**
 * The worker's pieces in-process on a real database, a real queue and a real git remote: insert a
 * job, send it, fetch it as a worker would and run it with a given agent.
 */

export interface Harness {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly boss: PgBoss;
  readonly logger: Logger;
  readonly remote: string;
  readonly root: string;
  readonly baseCommit: string;
  runJob(agent: MutationAgent, job?: Partial<NewJob>): Promise<{ job: EvolutionJob; outcome?: JobOutcome; error?: unknown }>;
  close(): Promise<void>;
}

/** Prints `{"score": <the number in score.txt or the SCORE constant of the evolved file>}`. */
export const EVALUATOR = `
const fs = require('node:fs');
const text = fs.readFileSync(process.argv[2] || 'program.js', 'utf8');
const match = /SCORE\\s*=\\s*(-?[0-9.]+)/.exec(text);
console.log(JSON.stringify({ summary: 'scored', score: match ? Number(match[1]) : 0 }));
`;

export async function createHarness(options: { files: Record<string, string>; env?: Record<string, string>; evaluatedFile?: string }): Promise<Harness> {
  const url = await createTestDatabase();
  const { remote, commit, root } = createRemote(options.files);
  const evaluator = path.join(root, 'evaluate.cjs');
  writeFileSync(evaluator, EVALUATOR);
  const env = {
    EXPERIMENT_ID: `llm-test-${path.basename(root)}`,
    DATABASE_URL: url,
    WORKER_REPO_REMOTE_URL: remote,
    WORKER_REPO_WORKTREE: path.join(root, 'clone'),
    WORKER_EVALUATOR_COMMAND: JSON.stringify([process.execPath, evaluator, options.evaluatedFile ?? 'program.js']),
    LOGS_BASE_DIR: root,
    TASKS_WORKER_MAX_RETRIES: '0',
    ...options.env,
  };
  const settings = loadSettings({ env, dotenv: false, cwd: root });
  const database = await openExperimentDatabase({ settings, applicationName: 'llm-test', supervise: false });
  const { pool, boss } = database;
  const logger = createConsoleLogger(process.env.LORELEY_TEST_LOG ?? 'silent');
  const repository = new WorkerRepository({ settings: { remoteUrl: settings.repository.remoteUrl, baseClone: settings.worker.git.baseClone }, pool, logger, workerId: 'worker-test', host: os.hostname() });

  return {
    settings, pool, boss, logger, remote, root, baseCommit: commit,
    async runJob(agent, fields = {}) {
      const inserted = await withTransaction(pool, async (client) => {
        const job = await insertJob(client, { experimentId: settings.experiment.uuid, baseCommit: commit, ...fields });
        await markQueued(client, job.id, await sendEvolutionJob(boss, settings.queue.name, job, client));
        return job;
      });
      const [queueJob] = await boss.fetch<{ jobId: string }>(settings.queue.name, { includeMetadata: true });
      const worker = new EvolutionWorker({ settings, pool, queue: await QueueStatements.load(pool, settings), logger, repository, agent, workerId: 'worker-test', host: os.hostname() });
      let outcome: JobOutcome | undefined;
      let error: unknown;
      try {
        outcome = await worker.run(queueJob, new AbortController().signal);
      } catch (caught) {
        error = caught;
      }
      return { job: (await getJob(pool, inserted.id))!, outcome, error };
    },
    async close() {
      await database.close({ graceful: false }).catch(() => undefined);
    },
  };
}
