import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RepositoryStateEmbedding } from '../../src/scheduler/embedding/repository-state.ts';
import { chunkText, DEFAULT_CHUNK_SETTINGS } from '../../src/shared/llm/chunk.ts';
import { ChunkedEmbedder, OpenAiEmbedder } from '../../src/shared/llm/embeddings.ts';
import { Secret } from '../../src/shared/settings/agent.ts';
import { cloneOrFetch } from '../../src/shared/git.ts';
import { stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { createFixture, pushCommit, type Fixture } from '../scheduler/fixture.ts';
import { fakeVector, startFakeOpenAi, type FakeOpenAi } from './helpers/fake-openai.ts';

/** A source file of `functions` small functions, about 6 lines and 150 characters each. */
function longSource(functions: number): string {
  const parts: string[] = [];
  for (let i = 0; i < functions; i++) {
    parts.push(`function step${i}(state) {\n  const next = state.value * ${i + 1} + ${i};\n  if (next > ${i * 10}) return { value: next - ${i} };\n  return { value: next };\n}\n`);
  }
  return parts.join('\n');
}

describe('chunking files for the embedding model', () => {
  it('cuts a file into windows of at most 80 lines that overlap by 8 and cover every line', () => {
    const source = longSource(200);
    const lines = source.split('\n').length - 1;
    const chunks = chunkText(source);
    assert.ok(chunks.length > 10);
    for (const chunk of chunks) {
      assert.ok(chunk.endLine - chunk.startLine + 1 <= DEFAULT_CHUNK_SETTINGS.targetLines, `chunk ${chunk.startLine}-${chunk.endLine} too long`);
      assert.ok(chunk.endLine - chunk.startLine + 1 >= DEFAULT_CHUNK_SETTINGS.minLines || chunk.endLine === lines);
    }
    assert.equal(chunks[0].startLine, 1);
    assert.equal(chunks.at(-1)!.endLine, lines);
    for (let i = 1; i < chunks.length; i++) assert.equal(chunks[i].startLine, chunks[i - 1].endLine - DEFAULT_CHUNK_SETTINGS.overlapLines + 1);
    // Windows end at a boundary-looking line (a brace, a blank line, a declaration), never mid-statement.
    assert.ok(chunks.slice(0, -1).every((c) => /^(\}|function .*\{|)$/.test(source.split('\n')[c.endLine - 1].trim())));
  });

  it('caps the chunks per file, drops blank windows and cuts absurdly long lines', () => {
    assert.equal(chunkText(longSource(2000), { ...DEFAULT_CHUNK_SETTINGS, maxChunks: 5 }).length, 5);
    assert.deepEqual(chunkText('\n\n   \n'), []);
    const [minified] = chunkText(`var a=${'1+'.repeat(50_000)}1;\n`);
    assert.ok(minified.text.length <= 400);
  });
});

describe('a commit with files longer than the embedding model accepts', () => {
  let fixture: Fixture;
  let server: FakeOpenAi;
  let clone: string;
  const maxInputChars = 6000;
  before(async () => {
    fixture = await createFixture({ files: { 'small.js': 'export const radius = 0.1;\n', 'big.js': longSource(400) } });
    clone = path.join(tempDir(), 'scheduler-clone');
    await cloneOrFetch(fixture.remote, clone);
    server = await startFakeOpenAi([], { maxInputChars });
  });
  after(async () => {
    await server.close();
    await fixture.close();
    await stopTestServer();
  });

  const model = (batchSize = 16) => new OpenAiEmbedder({
    endpoint: { baseUrl: server.url, apiKey: new Secret('sk-test'), maxRetries: 0, requestTimeoutSeconds: 10 },
    settings: { enabled: true, model: 'text-embedding-3-small', dimensions: 16, batchSize, concurrency: 3 },
  });
  const stateOf = (embedder: ChunkedEmbedder | OpenAiEmbedder, experimentId: string) => new RepositoryStateEmbedding({
    db: fixture.pool, experimentId, repository: clone, embedder,
    settings: { extensions: ['.js'], maxFileBytes: 1024 * 1024, dimensions: 16 },
  });

  it('fails unchunked: the stand-in server refuses the long file with a 400', async () => {
    assert.ok(longSource(400).length > maxInputChars * 5);
    await assert.rejects(stateOf(model(), '00000000-0000-4000-8000-0000000000a1').vector(fixture.rootCommit), /HTTP 400.*maximum context length/);
  });

  it('embeds every file chunked, each file the mean of its chunks, and a child from its parent', async () => {
    const before = server.requests.length;
    const embedder = new ChunkedEmbedder(model());
    assert.match(embedder.id, /^openai:text-embedding-3-small:16:chunks-80-20-8-64$/);
    const experiment = '00000000-0000-4000-8000-0000000000a2';
    const state = stateOf(embedder, experiment);
    const vector = await state.vector(fixture.rootCommit);
    assert.equal(vector.length, 16);
    const inputs = server.requests.slice(before).filter((r) => r.path.endsWith('/embeddings')).flatMap((r) => r.body.input as string[]);
    assert.ok(inputs.every((text) => text.length <= maxInputChars), 'every input fits the model');
    assert.ok(inputs.length > 20, `the big file went in as chunks (${inputs.length} inputs)`);

    // The file vector is the normalised mean of its chunks' vectors.
    const [bigVector] = await embedder.embed([longSource(400)]);
    const chunks = chunkText(longSource(400)).map((c) => fakeVector(c.text, 16));
    const mean = chunks[0].map((_, d) => chunks.reduce((sum, v) => sum + v[d], 0) / chunks.length);
    const norm = Math.hypot(...mean);
    bigVector.forEach((value, d) => assert.ok(Math.abs(value - mean[d] / norm) < 1e-9));

    // A child that changes the long file is embedded incrementally, chunked too.
    const child = pushCommit(fixture.remote, fixture.rootCommit, { 'big.js': `${longSource(400)}\nexport const extra = 1;\n` }, 'longer');
    await cloneOrFetch(fixture.remote, clone);
    assert.equal((await state.vector(child, fixture.rootCommit)).length, 16);
  });

  it('sends batches concurrently, never more than MAPELITES_CODE_EMBEDDING_CONCURRENCY at once', async () => {
    const slow = await startFakeOpenAi([], { embeddingDelayMs: 40 });
    try {
      const embedder = new OpenAiEmbedder({
        endpoint: { baseUrl: slow.url, apiKey: new Secret('sk-test'), maxRetries: 0, requestTimeoutSeconds: 10 },
        settings: { enabled: true, model: 'text-embedding-3-small', dimensions: 8, batchSize: 1, concurrency: 3 },
      });
      const texts = Array.from({ length: 12 }, (_, i) => `text ${i}`);
      const vectors = await embedder.embed(texts);
      assert.deepEqual(vectors[7], fakeVector('text 7', 8), 'vectors come back in input order');
      assert.equal(slow.embeddingsPeak(), 3);
    } finally {
      await slow.close();
    }
  });
});
