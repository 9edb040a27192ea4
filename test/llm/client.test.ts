import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { migrate } from '../../src/shared/db/migrations/index.ts';
import { createPool, type Pool } from '../../src/shared/db/pool.ts';
import { costBudgetSnapshot, spentUsd, usageTotals } from '../../src/shared/db/usage.ts';
import { createConsoleLogger } from '../../src/shared/logger.ts';
import { DEFAULT_PRICES_FILE, Secret, type OpenAiEndpointSettings } from '../../src/shared/settings/agent.ts';
import { ChatModelClient, ModelCallError } from '../../src/shared/llm/client.ts';
import { OpenAiEmbedder } from '../../src/shared/llm/embeddings.ts';
import { loadPriceTable } from '../../src/shared/llm/pricing.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';
import { fakeVector, startFakeOpenAi, type FakeOpenAi } from './helpers/fake-openai.ts';

const EXPERIMENT = '00000000-0000-4000-8000-000000000001';
const prices = loadPriceTable(DEFAULT_PRICES_FILE);
const logger = createConsoleLogger('silent');
let pool: Pool;

function endpoint(server: FakeOpenAi, overrides: Partial<OpenAiEndpointSettings> = {}): OpenAiEndpointSettings {
  return { baseUrl: server.url, apiKey: new Secret('sk-fake-key-for-tests'), maxRetries: 2, requestTimeoutSeconds: 10, ...overrides };
}

function chatClient(server: FakeOpenAi, overrides: Partial<OpenAiEndpointSettings> = {}): ChatModelClient {
  return new ChatModelClient({ endpoint: endpoint(server, overrides), usage: { pool, experimentId: EXPERIMENT, prices }, logger });
}

const request = { jobId: null, purpose: 'code', model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: 'hi' }], temperature: 0.5, maxTokens: 100 };

before(async () => {
  const url = await createTestDatabase();
  pool = createPool({ url, settings: { url, schema: 'loreley', bossSchema: 'pgboss', poolMax: 3 }, applicationName: 'llm-client-test' });
  await migrate(pool, 'loreley');
});

after(async () => {
  await pool.end();
  await stopTestServer();
});

describe('chat client', () => {
  it('sends the request, returns the text and records tokens, latency and cost', async () => {
    const server = await startFakeOpenAi([{ reply: 'hello', promptTokens: 1000, completionTokens: 500 }]);
    try {
      const reply = await chatClient(server).complete(request);
      assert.equal(reply.text, 'hello');
      assert.equal(reply.costUsd, (1000 * 0.15 + 500 * 0.6) / 1e6);
      const [sent] = server.chatRequests();
      assert.equal(sent.body.model, 'gpt-4o-mini');
      assert.equal(sent.body.temperature, 0.5);
      assert.equal(sent.body.max_tokens, 100);
      assert.equal(sent.headers.authorization, 'Bearer sk-fake-key-for-tests');
      const { rows } = await pool.query('SELECT * FROM model_calls WHERE experiment_id = $1', [EXPERIMENT]);
      assert.equal(rows.length, 1);
      assert.equal(rows[0].prompt_tokens, 1000);
      assert.equal(rows[0].completion_tokens, 500);
      assert.equal(rows[0].ok, true);
      assert.ok(rows[0].latency_ms >= 0);
    } finally {
      await server.close();
    }
  });

  it('retries a 429 and a 503 and then succeeds', async () => {
    const server = await startFakeOpenAi([
      { status: 429, headers: { 'retry-after-ms': '20' }, body: { error: { message: 'slow down', type: 'rate_limit' } } },
      { status: 503, headers: { 'retry-after-ms': '20' } },
      { reply: 'finally' },
    ]);
    try {
      const reply = await chatClient(server).complete(request);
      assert.equal(reply.text, 'finally');
      assert.equal(server.chatRequests().length, 3);
    } finally {
      await server.close();
    }
  });

  it('gives up on a 429 after maxRetries with a message that says so', async () => {
    const server = await startFakeOpenAi(Array.from({ length: 3 }, () => ({ status: 429, headers: { 'retry-after-ms': '10' } })));
    try {
      await assert.rejects(chatClient(server, { maxRetries: 1 }).complete(request), (error: unknown) => {
        assert.ok(error instanceof ModelCallError);
        assert.equal(error.kind, 'http');
        assert.match(error.message, /HTTP 429 after 1 retries/);
        return true;
      });
      assert.equal(server.chatRequests().length, 2);
    } finally {
      await server.close();
    }
  });

  it('times out a hung call, retrying it, and records the failure', async () => {
    const server = await startFakeOpenAi([{ hang: true }, { hang: true }]);
    try {
      const started = performance.now();
      await assert.rejects(chatClient(server, { requestTimeoutSeconds: 0.3, maxRetries: 1 }).complete({ ...request, purpose: 'hang' }), (error: unknown) => {
        assert.ok(error instanceof ModelCallError);
        assert.equal(error.kind, 'timeout');
        assert.match(error.message, /timed out after 0.3s/);
        return true;
      });
      assert.ok(performance.now() - started < 5000);
      assert.equal(server.chatRequests().length, 2);
      const { rows } = await pool.query(`SELECT ok, error FROM model_calls WHERE purpose = 'hang'`);
      assert.deepEqual(rows.map((r) => r.ok), [false]);
      assert.match(rows[0].error, /timed out/);
    } finally {
      await server.close();
    }
  });

  it('stops at once when the signal aborts', async () => {
    const server = await startFakeOpenAi([{ hang: true }]);
    try {
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error('drain')), 100);
      await assert.rejects(chatClient(server).complete({ ...request, signal: controller.signal }), (error: unknown) => error instanceof ModelCallError && error.kind === 'aborted');
    } finally {
      await server.close();
    }
  });

  it('turns malformed replies into clear errors', async () => {
    const server = await startFakeOpenAi([
      { raw: '{"not": "a completion"' },
      { raw: JSON.stringify({ id: 'x', object: 'chat.completion', choices: [] }) },
      { raw: JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: null }, finish_reason: 'length' }] }) },
    ]);
    try {
      const client = chatClient(server, { maxRetries: 0 });
      await assert.rejects(client.complete(request), (e: unknown) => e instanceof ModelCallError && e.kind === 'malformed');
      await assert.rejects(client.complete(request), /returned no message text/);
      await assert.rejects(client.complete(request), /finish reason length/);
    } finally {
      await server.close();
    }
  });

  it('totals usage per experiment for status and the budget', async () => {
    const totals = await usageTotals(pool, EXPERIMENT);
    assert.ok(totals.calls >= 5);
    assert.ok(totals.failedCalls >= 3);
    assert.equal(totals.promptTokens, totals.byModel.reduce((s, m) => s + m.promptTokens, 0));
    const spent = await spentUsd(pool, EXPERIMENT);
    assert.ok(Math.abs(spent - totals.costUsd) < 1e-12);
    assert.ok(spent > 0);
    const snapshot = await costBudgetSnapshot(pool, EXPERIMENT);
    assert.deepEqual({ finished: snapshot.finishedJobs, inFlight: snapshot.inFlightJobs }, { finished: 0, inFlight: 0 });
    assert.equal(await spentUsd(pool, '00000000-0000-4000-8000-00000000dead'), 0);
    for (const status of ['succeeded', 'failed', 'running', 'pending', 'queued', 'cancelled']) {
      await pool.query(`INSERT INTO evolution_jobs (experiment_id, base_commit, status) VALUES ($1, 'abc', $2)`, [EXPERIMENT, status]);
    }
    await pool.query(`INSERT INTO evolution_jobs (experiment_id, base_commit, status, kind) VALUES ($1, 'abc', 'succeeded', 'baseline')`, [EXPERIMENT]);
    const counted = await costBudgetSnapshot(pool, EXPERIMENT);
    assert.deepEqual({ finished: counted.finishedJobs, inFlight: counted.inFlightJobs }, { finished: 2, inFlight: 3 });
  });
});

describe('embeddings client', () => {
  it('embeds in batches, in input order, with the configured dimensions, and records usage', async () => {
    const server = await startFakeOpenAi();
    try {
      const embedder = new OpenAiEmbedder({
        endpoint: endpoint(server),
        settings: { enabled: true, model: 'text-embedding-3-small', dimensions: 12, batchSize: 2 },
        usage: { pool, experimentId: EXPERIMENT, prices },
      });
      assert.equal(embedder.id, 'openai:text-embedding-3-small:12');
      const texts = ['a', 'bb', 'ccc', 'dddd', ''];
      const vectors = await embedder.embed(texts);
      assert.equal(vectors.length, 5);
      assert.deepEqual(vectors[2], fakeVector('ccc', 12));
      assert.ok(vectors.every((v) => v.length === 12));
      const calls = server.requests.filter((r) => r.path.endsWith('/embeddings'));
      assert.deepEqual(calls.map((c) => c.body.input.length), [2, 2, 1]);
      assert.equal(calls[0].body.dimensions, 12);
      const { rows } = await pool.query(`SELECT count(*)::int AS n FROM model_calls WHERE purpose = 'embedding' AND ok`);
      assert.equal(rows[0].n, 3);
    } finally {
      await server.close();
    }
  });

  it('cuts longer vectors from a server that ignores dimensions and rejects shorter ones', async () => {
    const server = await startFakeOpenAi([], { embeddingDimensions: 32, ignoreDimensions: true });
    try {
      const client = (dimensions: number) => new OpenAiEmbedder({ endpoint: endpoint(server, { maxRetries: 0 }), settings: { enabled: true, model: 'local-embed', dimensions, batchSize: 8 } });
      const [v] = await client(8).embed(['x']);
      assert.equal(v.length, 8);
      assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-9);
      await assert.rejects(client(64).embed(['x']), /returned 32 dimensions, fewer than MAPELITES_CODE_EMBEDDING_DIMENSIONS=64/);
    } finally {
      await server.close();
    }
  });
});
