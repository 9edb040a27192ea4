import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { initExample } from '../../src/cli/init-example.ts';
import { bestBranchName, resolveExperiment } from '../../src/shared/experiment.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, killAllSpawned, NODE, spawnSupervisor } from '../helpers/processes.ts';

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

function sumRadii(directory: string, remote: string, ref: string): number {
  const work = mkdtempSync(path.join(os.tmpdir(), 'loreley-eval-'));
  try {
    writeFileSync(path.join(work, 'pack.js'), execFileSync('git', ['show', `${ref}:pack.js`], { cwd: remote, encoding: 'utf8' }));
    const out = execFileSync(NODE, [path.join(directory, 'tools', 'evaluate.js')], { cwd: work, encoding: 'utf8' });
    const metrics = (JSON.parse(out) as { metrics: Array<{ name: string; value: number }> }).metrics;
    return metrics.find((m) => m.name === 'sum_radii')!.value;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

test('the circle-packing example runs end to end to its budget and beats its baseline', { timeout: 240_000 }, async (t) => {
  const directory = tempDir('loreley-example-');
  initExample({ directory, example: 'circle-packing', maxJobs: 24 });
  const url = await createTestDatabase();
  const started = performance.now();
  const supervisor = spawnSupervisor(['--workers', '4', '--exit-when-done', '--max-jobs', '24'], {
    cwd: directory,
    env: baseEnv({ DATABASE_URL: url, LOG_CONSOLE: 'false', LORELEY_DATA_DIR: path.join(directory, '.loreley') }),
  });
  const exit = await supervisor.waitExit(200_000);
  t.diagnostic(`24 jobs with 4 workers took ${Math.round(performance.now() - started)} ms`);
  assert.equal(exit.code, 0, supervisor.stderr().slice(-3000));

  const experiment = resolveExperiment('circle-packing');
  const client = new pg.Client(url);
  await client.connect();
  try {
    const { rows } = await client.query<{ kind: string; status: string; count: number }>(
      `SELECT kind, status, count(*)::int AS count FROM loreley.evolution_jobs WHERE experiment_id = $1 GROUP BY kind, status`,
      [experiment.uuid],
    );
    const evolution = rows.filter((r) => r.kind === 'evolution');
    assert.equal(evolution.reduce((n, r) => n + r.count, 0), 24, JSON.stringify(rows));
    assert.ok(evolution.every((r) => r.status === 'succeeded' || r.status === 'failed'), `unfinished jobs: ${JSON.stringify(rows)}`);
    const { rows: finished } = await client.query('SELECT finished_at FROM loreley.experiments WHERE id = $1', [experiment.uuid]);
    assert.ok(finished[0].finished_at, 'the experiment is marked finished');
  } finally {
    await client.end();
  }

  const remote = path.join(directory, 'remote.git');
  const best = bestBranchName(experiment);
  execFileSync('git', ['rev-parse', '--verify', best], { cwd: remote });
  const baseline = sumRadii(directory, remote, 'main');
  const bestSum = sumRadii(directory, remote, best);
  t.diagnostic(`baseline sum_radii ${baseline.toFixed(6)}, best ${bestSum.toFixed(6)}`);
  assert.ok(bestSum > baseline, `best ${bestSum} should beat the baseline ${baseline}`);
  rmSync(directory, { recursive: true, force: true });
});
