import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadReadOnlySettings, loadSettings, SettingsError } from '../../src/shared/settings/index.ts';

/** The profile of `loreley status`, `logs` and `report`: identity, database, logs, fitness, budgets. */

test('read-only settings need no repository, agent or evaluator settings', () => {
  const env = { EXPERIMENT_ID: 'circle-packing', SCHEDULER_MAX_TOTAL_JOBS: '40', LORELEY_MAX_COST_USD: '2.5', MAPELITES_FITNESS_METRIC: 'score' };
  assert.throws(() => loadSettings({ env, dotenv: false, cwd: '/tmp' }), SettingsError, 'the full profile asks for them');
  const settings = loadReadOnlySettings({ env, dotenv: false, cwd: '/tmp' });
  assert.equal(settings.experiment.namespace, 'circle-packing-a7780c9d');
  assert.equal(settings.dataDir, '/tmp/.loreley');
  assert.equal(settings.logs.baseDir, '/tmp');
  assert.equal(settings.scheduler.maxTotalJobs, 40);
  assert.equal(settings.agent.maxCostUsd, 2.5);
  assert.equal(settings.archive.fitnessMetric, 'score');
  assert.ok(Object.isFrozen(settings.archive));
});

test('read-only settings still list every problem of what they do read', () => {
  assert.throws(
    () => loadReadOnlySettings({ env: { DATABASE_URL: 'mysql://x', LORELEY_MAX_COST_USD: '-1' }, dotenv: false, cwd: '/tmp' }),
    (error: unknown) => {
      assert.ok(error instanceof SettingsError);
      assert.deepEqual(error.problems.map((p) => p.split(':')[0]), ['EXPERIMENT_ID', 'DATABASE_URL', 'LORELEY_MAX_COST_USD']);
      return true;
    },
  );
});
