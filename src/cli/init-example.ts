import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../shared/errors.ts';
import { resolveExperiment } from '../shared/experiment.ts';

/**
 * `loreley init <dir> --example circle-packing`: a ready-to-run experiment. The evolved program
 * goes into a fresh git repository (a bare `remote.git` the workers clone and push to); the
 * evaluator and the offline mutation operator stay outside it, in `tools/`.
 */

export const EXAMPLES = ['circle-packing'] as const;
export type ExampleName = (typeof EXAMPLES)[number];

const EXAMPLES_ROOT = fileURLToPath(new URL('../../examples/', import.meta.url));
const CONFIG_ROOT = fileURLToPath(new URL('../../config/', import.meta.url));
/** The launcher npm puts on PATH (bin/loreley-supervisor): it finds a Node that can run Loreley. */
export const SUPERVISOR_LAUNCHER = fileURLToPath(new URL('../../bin/loreley-supervisor', import.meta.url));

function git(cwd: string, ...args: string[]): void {
  execFileSync('git', args, {
    cwd,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, GIT_AUTHOR_NAME: 'Loreley', GIT_AUTHOR_EMAIL: 'loreley@localhost', GIT_COMMITTER_NAME: 'Loreley', GIT_COMMITTER_EMAIL: 'loreley@localhost' },
  });
}

export interface InitOptions {
  readonly directory: string;
  readonly example: ExampleName;
  /** Job budget written to the .env. */
  readonly maxJobs?: number;
  readonly force?: boolean;
}

export function envFileFor(directory: string, maxJobs: number): string {
  const tools = path.join(directory, 'tools');
  return [
    '# Loreley experiment: pack 26 circles in the unit square (see README.md beside this file).',
    'EXPERIMENT_ID=circle-packing',
    `WORKER_REPO_REMOTE_URL=${path.join(directory, 'remote.git')}`,
    'WORKER_REPO_BRANCH=main',
    '',
    '# Offline mutation: perturbs the circle centres. For an LLM instead, see docs/llm.md.',
    'WORKER_AGENT_BACKEND=command',
    `WORKER_AGENT_COMMAND=${JSON.stringify(['node', path.join(tools, 'perturb-centers.js')])}`,
    'WORKER_AGENT_TIMEOUT_SECONDS=120',
    `WORKER_EVALUATOR_COMMAND=${JSON.stringify(['node', path.join(tools, 'evaluate.js')])}`,
    'WORKER_EVALUATOR_TIMEOUT_SECONDS=60',
    'WORKER_EVOLVE_PATHS=pack.js',
    '',
    '# Scheduling: a small budget that finishes in a minute or two.',
    'SCHEDULER_POLL_INTERVAL_SECONDS=0.5',
    'SCHEDULER_MAX_UNFINISHED_JOBS=8',
    'SCHEDULER_SCHEDULE_BATCH_SIZE=8',
    `SCHEDULER_MAX_TOTAL_JOBS=${maxJobs}`,
    'MAPELITES_FITNESS_METRIC=combined_score',
    'MAPELITES_SEED_POPULATION_SIZE=4',
    'TASKS_POLLING_INTERVAL_SECONDS=0.5',
    'SUPERVISOR_WORKERS=4',
    'SUPERVISOR_STATUS_INTERVAL_SECONDS=5',
    '',
  ].join('\n');
}

export interface ServiceFileOptions {
  readonly experimentId: string;
  readonly workers: number;
  readonly drainTimeoutSeconds: number;
  /** The supervisor command to run; the package's launcher by default. */
  readonly supervisor?: string;
}

/**
 * `ecosystem.config.cjs` (pm2) and `loreley.service` (systemd) for the experiment in `directory`,
 * from the templates in config/ with its paths filled in. The process manager's stop timeout is
 * the drain timeout plus the supervisor's own grace (it SIGKILLs children 30 s past the drain)
 * plus time to stop the embedded database, so a drain is never cut short.
 */
export function writeServiceFiles(directory: string, options: ServiceFileOptions): string[] {
  const stopSeconds = Math.ceil(options.drainTimeoutSeconds) + 60;
  const values: Record<string, string> = {
    DIRECTORY: directory,
    NAME: `loreley-${resolveExperiment(options.experimentId).namespace}`,
    SUPERVISOR: options.supervisor ?? SUPERVISOR_LAUNCHER,
    WORKERS: String(options.workers),
    DRAIN_SECONDS: String(options.drainTimeoutSeconds),
    KILL_TIMEOUT_MS: String(stopSeconds * 1000),
    STOP_TIMEOUT_SECONDS: String(stopSeconds),
  };
  const written: string[] = [];
  for (const file of ['ecosystem.config.cjs', 'loreley.service']) {
    const template = readFileSync(path.join(CONFIG_ROOT, file), 'utf8');
    writeFileSync(path.join(directory, file), template.replace(/\{\{([A-Z_]+)\}\}/g, (whole, key: string) => values[key] ?? whole));
    written.push(file);
  }
  return written;
}

export function initExample(options: InitOptions): { directory: string; created: string[] } {
  const directory = path.resolve(options.directory);
  if (!(EXAMPLES as readonly string[]).includes(options.example)) {
    throw new UserError(`unknown example ${JSON.stringify(options.example)} (available: ${EXAMPLES.join(', ')})`);
  }
  if (existsSync(directory) && readdirSync(directory).length > 0) {
    if (!options.force) throw new UserError(`${directory} is not empty (use --force to overwrite the example files in it)`);
  }
  const source = path.join(EXAMPLES_ROOT, options.example);
  mkdirSync(directory, { recursive: true });

  const seed = mkdtempSync(path.join(os.tmpdir(), 'loreley-init-'));
  try {
    cpSync(path.join(source, 'program'), seed, { recursive: true });
    git(seed, 'init', '--quiet', '--initial-branch=main');
    git(seed, 'add', '--all');
    git(seed, 'commit', '--quiet', '-m', `Initial ${options.example} program`);
    rmSync(path.join(directory, 'remote.git'), { recursive: true, force: true });
    git(directory, 'clone', '--quiet', '--bare', seed, 'remote.git');
  } finally {
    rmSync(seed, { recursive: true, force: true });
  }
  cpSync(path.join(source, 'tools'), path.join(directory, 'tools'), { recursive: true });
  cpSync(path.join(source, 'README.md'), path.join(directory, 'README.md'));
  writeFileSync(path.join(directory, '.env'), envFileFor(directory, options.maxJobs ?? 24));
  const service = writeServiceFiles(directory, { experimentId: 'circle-packing', workers: 4, drainTimeoutSeconds: 60 });
  return { directory, created: ['remote.git', 'tools/', 'README.md', '.env', ...service] };
}
