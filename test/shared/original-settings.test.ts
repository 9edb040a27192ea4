import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closestSetting, translateOriginalSettings, unknownSettingWarnings } from '../../src/shared/settings/original.ts';
import { loadSettings } from '../../src/shared/settings/index.ts';

/** A `.env` written for the original Python Loreley, read here. */

const BASE = { EXPERIMENT_ID: 'original', WORKER_REPO_REMOTE_URL: '/tmp/remote.git', WORKER_EVALUATOR_COMMAND: 'true', WORKER_AGENT_COMMAND: 'true' };
const load = (env: Record<string, string>) => loadSettings({ env: { ...BASE, ...env }, dotenv: false, cwd: '/tmp' });

describe("the original Loreley's settings", () => {
  it('are read under their new names, converted where the unit differs, each with a one-line notice', () => {
    const settings = load({
      WORKER_EVOLUTION_GLOBAL_GOAL: 'pack 26 circles',
      WORKER_EVOLUTION_COMMIT_AUTHOR: 'Evo Bot',
      WORKER_EVOLUTION_COMMIT_EMAIL: 'evo@example.org',
      MAPELITES_PREPROCESS_MAX_FILE_SIZE_KB: '128',
      MAPELITES_PREPROCESS_ALLOWED_EXTENSIONS: '[".py", ".js"]',
      MAPELITES_FEATURE_TRUNCATION_K: '2.5',
      MAPELITES_CHUNK_TARGET_LINES: '60',
      MAPELITES_CODE_EMBEDDING_BATCH_SIZE: '12',
    });
    assert.equal(settings.scheduler.goal, 'pack 26 circles');
    assert.equal(settings.worker.git.authorName, 'Evo Bot');
    assert.equal(settings.worker.git.authorEmail, 'evo@example.org');
    assert.equal(settings.archive.embedding.maxFileBytes, 128 * 1024);
    assert.deepEqual(settings.archive.embedding.extensions, ['.py', '.js']);
    assert.equal(settings.archive.clip, 2.5);
    // Same names as the original: read as they are, no notice.
    assert.equal(settings.agent.embeddings.chunk?.targetLines, 60);
    assert.equal(settings.agent.embeddings.batchSize, 12);
    assert.equal(settings.notices.length, 6);
    assert.ok(settings.notices.every((line) => !line.includes('\n')));
    assert.match(settings.notices.join('\n'), /^WORKER_EVOLUTION_GLOBAL_GOAL is the original Loreley's name for SCHEDULER_GOAL: read as SCHEDULER_GOAL; rename it/m);
    assert.match(settings.notices.join('\n'), /MAPELITES_PREPROCESS_MAX_FILE_SIZE_KB .* read as MAPELITES_EMBEDDING_MAX_FILE_BYTES \(KiB converted to bytes\)/);
  });

  it('leave the new name the winner when both are set, and say so', () => {
    const settings = load({ WORKER_EVOLUTION_GLOBAL_GOAL: 'old goal', SCHEDULER_GOAL: 'new goal' });
    assert.equal(settings.scheduler.goal, 'new goal');
    assert.deepEqual(settings.notices, ['WORKER_EVOLUTION_GLOBAL_GOAL (the original Loreley\'s name) is ignored: SCHEDULER_GOAL is set too']);
  });

  it('combine DB_HOST, DB_PORT, DB_USER, DB_PASSWORD and DB_NAME into DATABASE_URL, with the original defaults', () => {
    const { env, notices } = translateOriginalSettings({ DB_HOST: 'db.internal', DB_PASSWORD: 'p@ss/word' });
    assert.equal(env.DATABASE_URL, 'postgresql://loreley:p%40ss%2Fword@db.internal:5432/loreley');
    assert.match(notices[0], /DB_HOST, DB_PASSWORD are the original Loreley's database settings: combined into DATABASE_URL/);
    assert.equal(translateOriginalSettings({ DB_HOST: 'x', DATABASE_URL: 'postgres://a@b/c' }).env.DATABASE_URL, 'postgres://a@b/c');
  });
});

describe('keys that mean nothing here', () => {
  it('name the closest known setting for a typo, and say why an original-only setting is ignored', () => {
    const settings = load({ SCHEDULER_MAX_UNFINSHED_JOBS: '3', MAPELITES_CELS: '100', TASKS_REDIS_URL: 'redis://localhost:6379/0', WORKER_REPO_ENABLE_LFS: 'true', HOME_DIR_X: 'not ours' });
    assert.deepEqual(settings.notices, [
      'MAPELITES_CELS is not a Loreley setting: ignored (did you mean MAPELITES_CELLS?)',
      'SCHEDULER_MAX_UNFINSHED_JOBS is not a Loreley setting: ignored (did you mean SCHEDULER_MAX_UNFINISHED_JOBS?)',
      'TASKS_REDIS_URL is a setting of the original Loreley with no counterpart here (the queue is pg-boss in the same PostgreSQL; there is no Redis): ignored',
      'WORKER_REPO_ENABLE_LFS is a setting of the original Loreley with no counterpart here (git is used with fixed, documented behaviour here): ignored',
    ]);
  });

  it('are not reported for settings that exist, nor for keys without our prefixes', () => {
    assert.deepEqual(load({ SCHEDULER_MAX_UNFINISHED_JOBS: '3', LOG_LEVEL: 'debug', PATH: '/usr/bin', NODE_OPTIONS: '' }).notices, []);
    assert.deepEqual(unknownSettingWarnings({ OTHER_THING: '1' }, new Set()), []);
    assert.equal(closestSetting('WORKER_AGENT_MODLES', ['WORKER_AGENT_MODELS', 'WORKER_AGENT_MAX_TOKENS']), 'WORKER_AGENT_MODELS');
  });
});
