import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { tempDir } from '../helpers/git.ts';
import path from 'node:path';
import { inspect } from 'node:util';
import { describe, it } from 'node:test';
import { DEFAULT_PRICES_FILE, parseWeightedModels, readAgentSettings } from '../../src/shared/settings/agent.ts';
import { EnvReader } from '../../src/shared/settings/reader.ts';
import { costBudgetExhausted } from '../../src/shared/llm/budget.ts';
import { drawModel } from '../../src/shared/llm/client.ts';
import { costUsd, loadPriceTable } from '../../src/shared/llm/pricing.ts';

describe('cost budget decision', () => {
  it('never stops without a budget', () => {
    assert.equal(costBudgetExhausted({ spentUsd: 1e6, finishedJobs: 1, inFlightJobs: 100, maxCostUsd: undefined }), false);
    assert.equal(costBudgetExhausted({ spentUsd: 1e6, finishedJobs: 1, inFlightJobs: 100, maxCostUsd: null }), false);
  });

  it('stops once spent reaches the budget', () => {
    assert.equal(costBudgetExhausted({ spentUsd: 0.99, finishedJobs: 10, inFlightJobs: 0, maxCostUsd: 1 }), false);
    assert.equal(costBudgetExhausted({ spentUsd: 1, finishedJobs: 10, inFlightJobs: 0, maxCostUsd: 1 }), true);
  });

  it('counts jobs in flight at the average finished job cost', () => {
    // 0.8 spent over 8 jobs = 0.1 a job; one in flight → 0.9, two → 1.0.
    assert.equal(costBudgetExhausted({ spentUsd: 0.8, finishedJobs: 8, inFlightJobs: 1, maxCostUsd: 1 }), false);
    assert.equal(costBudgetExhausted({ spentUsd: 0.8, finishedJobs: 8, inFlightJobs: 2, maxCostUsd: 1 }), true);
  });

  it('counts in-flight jobs as free until a job has finished, and a zero budget as spent', () => {
    assert.equal(costBudgetExhausted({ spentUsd: 0.5, finishedJobs: 0, inFlightJobs: 50, maxCostUsd: 1 }), false);
    assert.equal(costBudgetExhausted({ spentUsd: 0, finishedJobs: 0, inFlightJobs: 0, maxCostUsd: 0 }), true);
  });
});

describe('price table', () => {
  it('prices by the longest matching model prefix; unknown models are free', () => {
    const table = loadPriceTable(DEFAULT_PRICES_FILE);
    assert.equal(costUsd(table, 'gpt-4o-mini', 1_000_000, 1_000_000), 0.75);
    assert.equal(costUsd(table, 'gpt-4o-mini-2024-07-18', 1000, 200), (1000 * 0.15 + 200 * 0.6) / 1e6);
    assert.equal(costUsd(table, 'gpt-4o-2024-08-06', 1_000_000, 0), 2.5);
    assert.equal(costUsd(table, 'qwen2.5-coder:7b', 1_000_000, 1_000_000), 0);
  });

  it('lets a user file add and override entries', () => {
    const dir = tempDir('loreley-prices-');
    const file = path.join(dir, 'prices.json');
    writeFileSync(file, JSON.stringify({ models: { 'my-model': { prompt: 1, completion: 2 }, 'gpt-4o-mini': { prompt: 10, completion: 0 } } }));
    const table = loadPriceTable(DEFAULT_PRICES_FILE, file);
    assert.equal(costUsd(table, 'my-model', 1_000_000, 1_000_000), 3);
    assert.equal(costUsd(table, 'gpt-4o-mini', 1_000_000, 1_000_000), 10);
    writeFileSync(file, JSON.stringify({ models: { bad: { prompt: 'x' } } }));
    assert.throws(() => loadPriceTable(DEFAULT_PRICES_FILE, file), /non-negative numbers/);
  });
});

describe('agent settings', () => {
  it('parses weighted model lists, keeping Ollama tags in the name', () => {
    assert.deepEqual(parseWeightedModels('gpt-4o-mini:3, qwen2.5-coder:7b, llama3:8b:1.5'), [
      { name: 'gpt-4o-mini', weight: 3 },
      { name: 'qwen2.5-coder:7b', weight: 1 },
      { name: 'llama3:8b', weight: 1.5 },
    ]);
    assert.throws(() => parseWeightedModels('a:0'), /not positive/);
  });

  it('draws one model per job, the same for the same job id, by weight', () => {
    const models = parseWeightedModels('a:3,b:1');
    const draws = Array.from({ length: 400 }, (_, i) => drawModel(models, `job-${i}`));
    assert.deepEqual(draws.slice(0, 20), Array.from({ length: 20 }, (_, i) => drawModel(models, `job-${i}`)));
    const share = draws.filter((m) => m === 'a').length / draws.length;
    assert.ok(share > 0.65 && share < 0.85, `share of a: ${share}`);
  });

  it('reads defaults and validates values, collecting every problem', () => {
    const ok = new EnvReader({ WORKER_AGENT_BACKEND: 'openai', OPENAI_BASE_URL: 'http://127.0.0.1:8000/v1/' });
    const settings = readAgentSettings(ok);
    assert.deepEqual(ok.problems, []);
    assert.equal(settings.openai.baseUrl, 'http://127.0.0.1:8000/v1');
    assert.equal(settings.editMode, 'diff');
    assert.equal(settings.maxAttempts, 3);
    assert.equal(settings.planning.enabled, false);
    assert.equal(settings.maxCostUsd, undefined);
    assert.equal(settings.embeddings.dimensions, 256);

    const bad = new EnvReader({
      WORKER_AGENT_BACKEND: 'openai', WORKER_AGENT_MODELS: 'x:-1', WORKER_AGENT_TEMPERATURE: '3', WORKER_AGENT_EDIT_MODE: 'patch',
      OPENAI_BASE_URL: 'ftp://x', LORELEY_MAX_COST_USD: '-2', WORKER_EVOLVE_PATHS: '../outside.js',
    });
    readAgentSettings(bad);
    for (const name of ['WORKER_AGENT_MODELS', 'WORKER_AGENT_TEMPERATURE', 'WORKER_AGENT_EDIT_MODE', 'OPENAI_BASE_URL', 'LORELEY_MAX_COST_USD', 'WORKER_EVOLVE_PATHS']) {
      assert.ok(bad.problems.some((p) => p.startsWith(name)), `${name} in ${bad.problems.join(' | ')}`);
    }
  });

  it('requires a key only for OpenAI itself, and never shows it', () => {
    const missing = new EnvReader({ WORKER_AGENT_BACKEND: 'openai' });
    readAgentSettings(missing);
    assert.match(missing.problems.join('\n'), /OPENAI_API_KEY: is required/);

    const key = 'sk-test-very-secret-1234';
    const reader = new EnvReader({ WORKER_AGENT_BACKEND: 'openai', OPENAI_API_KEY: key, LORELEY_MAX_COST_USD: '2.5' });
    const settings = readAgentSettings(reader);
    assert.equal(settings.openai.apiKey.reveal(), key);
    assert.equal(settings.maxCostUsd, 2.5);
    assert.ok(!JSON.stringify(settings).includes(key));
    assert.ok(!inspect(settings, { depth: 10 }).includes(key));
    assert.ok(!`${settings.openai.apiKey}`.includes(key));
  });
});
