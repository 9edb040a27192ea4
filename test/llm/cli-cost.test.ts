import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getCommitCard } from '../../src/shared/db/results.ts';
import { costBudgetSnapshot } from '../../src/shared/db/usage.ts';
import { costBudgetExhausted } from '../../src/shared/llm/budget.ts';
import { createAgent } from '../../src/worker/agents/index.ts';
import { modelFromArgs, parseClaudeResult, parseCodexEvents } from '../../src/worker/llm/cli-usage.ts';
import { stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { createHarness, type Harness } from './helpers/harness.ts';

/**
 * Stand-ins for `codex exec --json` and `claude -p --output-format json` that edit the program as
 * the real CLIs would and print output of the shape the real ones print (event lines for codex,
 * one result object for claude), so the usage and cost Loreley records come from real-shaped text.
 */

const CODEX = `
const fs = require('node:fs');
fs.readFileSync(0, 'utf8');
fs.writeFileSync('program.js', fs.readFileSync('program.js', 'utf8').replace(/SCORE = \\d+/, 'SCORE = 7'));
const events = [
  { type: 'thread.started', thread_id: '0199a213-81c0-7800-8aa1-bbab2a035a53' },
  { type: 'turn.started' },
  { type: 'item.completed', item: { id: 'item_0', type: 'reasoning', text: '**Reading program.js**' } },
  { type: 'item.started', item: { id: 'item_1', type: 'command_execution', command: 'bash -lc cat program.js', aggregated_output: '', exit_code: null, status: 'in_progress' } },
  { type: 'item.completed', item: { id: 'item_1', type: 'command_execution', command: 'bash -lc cat program.js', aggregated_output: 'const SCORE = 1;', exit_code: 0, status: 'completed' } },
  { type: 'item.completed', item: { id: 'item_2', type: 'file_change', changes: [{ path: 'program.js', kind: 'update' }], status: 'completed' } },
  { type: 'item.completed', item: { id: 'item_3', type: 'agent_message', text: 'I raised SCORE.\\n{"summary": "codex raised SCORE to 7"}' } },
  { type: 'turn.completed', usage: { input_tokens: 24763, cached_input_tokens: 24448, output_tokens: 1200 } },
];
for (const event of events) console.log(JSON.stringify(event));
`;

const CLAUDE = `
const fs = require('node:fs');
fs.readFileSync(0, 'utf8');
const failing = process.env.CLAUDE_STAND_IN_FAIL === '1';
if (!failing) fs.writeFileSync('program.js', fs.readFileSync('program.js', 'utf8').replace(/SCORE = \\d+/, 'SCORE = 9'));
console.log(JSON.stringify({
  type: 'result', subtype: failing ? 'error_during_execution' : 'success', is_error: failing, duration_ms: 21034, duration_api_ms: 19876, num_turns: 6,
  result: failing ? 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}' : 'Set SCORE to 9.\\n\\n{"summary": "claude set SCORE to 9"}',
  session_id: 'b2d6f8a4-3c1e-4f0a-9d7b-5e8c1a2b3c4d', total_cost_usd: 0.0731,
  usage: { input_tokens: 12, cache_creation_input_tokens: 8231, cache_read_input_tokens: 40213, output_tokens: 911, server_tool_use: { web_search_requests: 0 }, service_tier: 'standard' },
  modelUsage: {
    'claude-sonnet-4-5-20250929': { inputTokens: 12, outputTokens: 911, cacheReadInputTokens: 40213, cacheCreationInputTokens: 8231, webSearchRequests: 0, costUSD: 0.07, contextWindow: 200000 },
    'claude-haiku-4-5-20251001': { inputTokens: 2100, outputTokens: 180, cacheReadInputTokens: 0, cacheCreationInputTokens: 0, webSearchRequests: 0, costUSD: 0.0031, contextWindow: 200000 },
  },
  permission_denials: [], uuid: '5f0c1d2e-7a8b-4c9d-8e1f-2a3b4c5d6e7f',
}));
process.exit(failing ? 1 : 0);
`;

const PROGRAM = '// EVOLVE-BLOCK-START\nconst SCORE = 1;\n// EVOLVE-BLOCK-END\n';
let bin: string;
const harnesses: Harness[] = [];

function standIn(name: string, source: string): string {
  const script = path.join(bin, `${name}.cjs`);
  writeFileSync(script, source);
  const executable = path.join(bin, name);
  writeFileSync(executable, `#!/bin/sh\nexec "${process.execPath}" "${script}" "$@"\n`);
  chmodSync(executable, 0o755);
  return executable;
}

before(() => {
  bin = path.join(tempDir('loreley-cli-cost-'), 'bin');
  mkdirSync(bin);
  standIn('codex-json', CODEX);
  standIn('claude-json', CLAUDE);
});

after(async () => {
  delete process.env.CLAUDE_STAND_IN_FAIL;
  for (const harness of harnesses) await harness.close();
  await stopTestServer();
});

async function run(env: Record<string, string>) {
  const harness = await createHarness({ files: { 'program.js': PROGRAM }, env: { WORKER_EVOLVE_PATHS: 'program.js', ...env } });
  harnesses.push(harness);
  const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
  const ran = await harness.runJob(agent, { goal: 'maximise SCORE' });
  const { rows } = await harness.pool.query(
    `SELECT model, purpose, prompt_tokens AS "promptTokens", completion_tokens AS "completionTokens", cost_usd AS "costUsd", ok, error
       FROM model_calls WHERE job_id = $1 ORDER BY model`,
    [ran.job.id],
  );
  return { harness, ...ran, calls: rows };
}

describe('usage and cost of coding-agent CLIs', () => {
  it('reads the --model flag the way the CLIs do', () => {
    assert.equal(modelFromArgs(['--model', 'o4-mini']), 'o4-mini');
    assert.equal(modelFromArgs(['-m', 'gpt-5']), 'gpt-5');
    assert.equal(modelFromArgs(['--model=sonnet']), 'sonnet');
    assert.equal(modelFromArgs(['-c', 'model="gpt-5-mini"']), 'gpt-5-mini');
    assert.equal(modelFromArgs(['--profile', 'fast']), undefined);
  });

  it('ignores text that is not an event and survives output without usage', () => {
    assert.deepEqual(parseCodexEvents('banner\n{"type":"turn.started"}\n{not json\n', 'gpt-5').usage, []);
    assert.equal(parseClaudeResult('plain text answer\n', 'claude').usage.length, 0);
  });

  it('records a codex run from its --json turn usage, priced from the table for the --model it was given', async () => {
    const { job, error, calls, harness, outcome } = await run({
      WORKER_AGENT_BACKEND: 'codex', WORKER_CODEX_BIN: path.join(bin, 'codex-json'), WORKER_CODEX_EXTRA_ARGS: '--model gpt-5',
    });
    assert.equal(error, undefined, String(error));
    assert.equal(job.status, 'succeeded');
    assert.equal(calls.length, 1);
    const [call] = calls;
    assert.deepEqual({ model: call.model, purpose: call.purpose, promptTokens: call.promptTokens, completionTokens: call.completionTokens, ok: call.ok },
      { model: 'gpt-5', purpose: 'code', promptTokens: 24763, completionTokens: 1200, ok: true });
    // config/prices.json: gpt-5 at 1.25 USD per 1M prompt tokens and 10 per 1M completion tokens.
    assert.ok(Math.abs(call.costUsd - (24763 * 1.25 + 1200 * 10) / 1e6) < 1e-12, String(call.costUsd));
    assert.equal((await getCommitCard(harness.pool, harness.settings.experiment.uuid, outcome!.commit))?.message, 'codex raised SCORE to 7');
  });

  it('records a claude run per model with the cost claude reports, and LORELEY_MAX_COST_USD counts it', async () => {
    const { job, error, calls, harness, outcome } = await run({
      WORKER_AGENT_BACKEND: 'claude', WORKER_CLAUDE_BIN: path.join(bin, 'claude-json'), LORELEY_MAX_COST_USD: '0.05',
    });
    assert.equal(error, undefined, String(error));
    assert.equal(job.status, 'succeeded');
    assert.deepEqual(calls.map((c) => [c.model, c.promptTokens, c.completionTokens, c.costUsd, c.ok]), [
      ['claude-haiku-4-5-20251001', 2100, 180, 0.0031, true],
      ['claude-sonnet-4-5-20250929', 12 + 40213 + 8231, 911, 0.07, true],
    ]);
    assert.equal((await getCommitCard(harness.pool, harness.settings.experiment.uuid, outcome!.commit))?.message, 'claude set SCORE to 9');
    // What the scheduler asks before scheduling: 0.0731 USD spent of a 0.05 budget, so no new job.
    const snapshot = await costBudgetSnapshot(harness.pool, harness.settings.experiment.uuid);
    assert.ok(Math.abs(snapshot.spentUsd - 0.0731) < 1e-12);
    assert.equal(costBudgetExhausted({ ...snapshot, maxCostUsd: harness.settings.agent.maxCostUsd }), true);
  });

  it('records a failed claude run too, and the job says why claude failed', async () => {
    process.env.CLAUDE_STAND_IN_FAIL = '1';
    try {
      const { job, calls } = await run({ WORKER_AGENT_BACKEND: 'claude', WORKER_CLAUDE_BIN: path.join(bin, 'claude-json') });
      assert.equal(job.status, 'failed');
      assert.match(job.lastError ?? '', /exited with code 1.*overloaded_error/s);
      assert.equal(calls.length, 2);
      assert.ok(calls.every((c) => c.ok === false && /Overloaded/.test(c.error)));
      assert.ok(Math.abs(calls.reduce((sum, c) => sum + c.costUsd, 0) - 0.0731) < 1e-12);
    } finally {
      delete process.env.CLAUDE_STAND_IN_FAIL;
    }
  });
});
