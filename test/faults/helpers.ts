import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { urlPasswords } from '../../src/shared/logger.ts';
import type { Fixture, QueueClient } from '../helpers/experiment.ts';
import { after } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { killAllSpawned, NODE, type Spawned } from '../helpers/processes.ts';
import { audit, type AuditOptions, type AuditReport } from './audit.ts';

/**
 * An agent and an evaluator for fault tests that stall once per job at the stage a case names
 * (`payload.stall`: `agent`, `evaluator`), so the test can kill the worker there; the run after
 * the kill goes straight through. Each writes `<records>/<jobId>.<stage>.<n>.json` with its pid and
 * its parent's (the worker) when it starts.
 */
const STAGE_SCRIPT = (stage: 'agent' | 'evaluator') => `
import { appendFileSync, existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
const records = process.argv[2];
const context = JSON.parse(readFileSync(process.env.LORELEY_JOB_CONTEXT, 'utf8'));
const stall = context.payload.stall ?? 'none';
let n = 1;
while (existsSync(records + '/' + context.jobId + '.${stage}.' + n + '.json')) n += 1;
const file = records + '/' + context.jobId + '.${stage}.' + n + '.json';
writeFileSync(file + '.tmp', JSON.stringify({ pid: process.pid, ppid: process.ppid, run: n }));
renameSync(file + '.tmp', file);
if (stall === '${stage}' && n === 1) await new Promise((resolve) => setTimeout(resolve, 60000));
// How long an evaluation takes: the job's payload, or a file the test writes for every job.
const evaluatorMs = context.payload.evaluatorMs ?? (existsSync(records + '/evaluator-ms') ? Number(readFileSync(records + '/evaluator-ms', 'utf8')) : 0);
if (${stage === 'evaluator'} && evaluatorMs) await new Promise((resolve) => setTimeout(resolve, evaluatorMs));
${
  stage === 'agent'
    ? `appendFileSync('prog.txt', 'y = ' + JSON.stringify(context.jobId) + ' ' + n + '\\n');
console.log(JSON.stringify({ summary: 'fault-test edit ' + n }));`
    : `console.log(JSON.stringify({ summary: 'scored', metrics: [{ name: 'score', value: readFileSync('prog.txt', 'utf8').length, higher_is_better: true }] }));`
}
`;

/** Installs the stalling agent and evaluator into the fixture's environment. */
export function useStallingCommands(fixture: Fixture): void {
  const agent = path.join(fixture.root, 'fault-agent.mjs');
  const evaluator = path.join(fixture.root, 'fault-evaluator.mjs');
  writeFileSync(agent, STAGE_SCRIPT('agent'));
  writeFileSync(evaluator, STAGE_SCRIPT('evaluator'));
  Object.assign(fixture.env, {
    WORKER_AGENT_COMMAND: JSON.stringify([NODE, agent, fixture.recordsDir]),
    WORKER_EVALUATOR_COMMAND: JSON.stringify([NODE, evaluator, fixture.recordsDir]),
  });
}

export interface StageRecord {
  readonly pid: number;
  readonly ppid: number;
  readonly run: number;
}

export function stageRecord(fixture: Fixture, jobId: string, stage: 'agent' | 'evaluator', run = 1): StageRecord | undefined {
  try {
    return JSON.parse(readFileSync(path.join(fixture.recordsDir, `${jobId}.${stage}.${run}.json`), 'utf8')) as StageRecord;
  } catch {
    return undefined;
  }
}

/** Seconds the process has been running (from /proc), for kills that must come after min-uptime. */
export function uptimeSeconds(pid: number): number {
  try {
    return Number(execFileSync('ps', ['-o', 'etimes=', '-p', String(pid)], { encoding: 'utf8' }).trim());
  } catch {
    return 0;
  }
}

/** The audit for a fixture-based run, with the fixture's paths and secrets filled in. */
export function auditFixture(fixture: Fixture, queue: QueueClient, overrides: Partial<AuditOptions> = {}): Promise<AuditReport> {
  const settings = queue.settings;
  return audit({
    databaseUrl: overrides.databaseUrl ?? fixture.databaseUrl!,
    schema: settings.database.schema,
    bossSchema: settings.database.bossSchema,
    experimentUuid: settings.experiment.uuid,
    queueName: settings.queue.name,
    root: fixture.root,
    baseClone: fixture.worktree,
    logDirs: [fixture.logsDir],
    secrets: [...urlPasswords(overrides.databaseUrl ?? fixture.databaseUrl), ...(overrides.secrets ?? [])],
    ...overrides,
  });
}

/**
 * What a fault test starts and must leave nothing of: its supervisors (killed by process group),
 * every other spawned process, its queue clients and the test server, all at the file's end.
 */
export function cleanUpAtEnd(): { readonly running: Spawned[]; readonly queues: QueueClient[] } {
  const running: Spawned[] = [];
  const queues: QueueClient[] = [];
  after(async () => {
    for (const spawned of running) spawned.killGroup('SIGKILL');
    killAllSpawned();
    for (const queue of queues) await queue.close();
    await stopTestServer();
  });
  return { running, queues };
}
