import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadSettings, SettingsError } from '../../src/shared/settings/index.ts';

const BASE = { EXPERIMENT_ID: 'settings-test', WORKER_REPO_REMOTE_URL: '/tmp/remote.git', WORKER_EVALUATOR_COMMAND: 'true', WORKER_AGENT_COMMAND: 'true' };
const load = (env: Record<string, string>) => loadSettings({ env: { ...BASE, ...env }, cwd: '/tmp', dotenv: false });

describe('archive and scheduler settings', () => {
  test('defaults', () => {
    const { archive, scheduler } = load({});
    assert.equal(archive.behaviorDescriptor, 'embedding');
    assert.equal(archive.cellsPerDim, 32);
    assert.equal(archive.dimensions, 4);
    assert.equal(archive.fitnessMetric, 'combined_score');
    assert.equal(archive.fitnessHigherIsBetter, true);
    assert.equal(archive.fitnessFloor, -1e9);
    assert.equal(archive.islands, 1);
    assert.equal(archive.samplerSeed, undefined);
    assert.ok(archive.embedding.extensions.includes('.js'));
    assert.equal(scheduler.maxTotalJobs, undefined);
    assert.equal(scheduler.goal, undefined);
  });

  test('metrics feature dimensions are parsed into grid axes', () => {
    const { archive } = load({ MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics', MAPELITES_FEATURE_DIMENSIONS: 'sum_radii:0:2.7, validity:0:1' });
    assert.deepEqual(archive.featureDimensions, [{ metric: 'sum_radii', min: 0, max: 2.7 }, { metric: 'validity', min: 0, max: 1 }]);
    assert.equal(archive.dimensions, 2);
  });

  test('every problem is reported at once', () => {
    try {
      load({
        MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics',
        MAPELITES_FEATURE_DIMENSIONS: 'sum_radii:2:1,bad,sum_radii:0:1',
        MAPELITES_ISLANDS: '0',
        SCHEDULER_MAX_RESENDS: '-1',
      });
      assert.fail('expected a SettingsError');
    } catch (error) {
      assert.ok(error instanceof SettingsError);
      const text = error.problems.join('\n');
      assert.match(text, /sum_radii:2:1.*needs min < max/);
      assert.match(text, /"bad" must be metric:min:max/);
      assert.match(text, /MAPELITES_ISLANDS: must be an integer >= 1/);
      assert.match(text, /SCHEDULER_MAX_RESENDS/);
    }
    assert.throws(() => load({ MAPELITES_BEHAVIOR_DESCRIPTOR: 'metrics' }), /MAPELITES_FEATURE_DIMENSIONS: is required/);
    assert.throws(() => load({ MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES: '4' }), /must be greater than MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS/);
  });
});
