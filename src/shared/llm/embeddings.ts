import type OpenAI from 'openai';
import pLimit from 'p-limit';
import type { Pool } from '../db/pool.ts';
import { recordModelCall } from '../db/usage.ts';
import type { EmbeddingClientSettings, OpenAiEndpointSettings } from '../settings/agent.ts';
import { chunkText, DEFAULT_CHUNK_SETTINGS, type ChunkSettings } from './chunk.ts';
import { describeCallError, openAiClient } from './client.ts';
import type { Settings } from '../settings/index.ts';
import { costUsd, priceTableFromSettings, type PriceTable } from './pricing.ts';

/**
 * Code embeddings from an OpenAI-compatible `/embeddings` endpoint, for the scheduler's
 * `embedding` behaviour descriptor (`MAPELITES_CODE_EMBEDDING_MODEL`, `…_DIMENSIONS`). Texts go in
 * batches of `batchSize`, at most `concurrency` requests in flight; vectors come back in input
 * order, each of `dimensions` numbers. The caller caches by blob hash under `id`, which changes
 * with the model and the dimensions.
 *
 * `dimensions` is sent to the server (OpenAI's text-embedding-3 models shorten their vectors);
 * a server that ignores it and returns longer vectors gets them cut and renormalised, a shorter
 * one is an error. Calls are recorded in `model_calls` when a usage sink is given.
 */

export interface TextEmbedder {
  readonly id: string;
  readonly dimensions: number;
  embed(texts: string[]): Promise<number[][]>;
}

export interface OpenAiEmbedderOptions {
  readonly endpoint: OpenAiEndpointSettings;
  readonly settings: EmbeddingClientSettings;
  readonly usage?: { readonly pool: Pool; readonly experimentId: string; readonly prices: PriceTable };
  readonly signal?: AbortSignal;
  readonly client?: OpenAI;
}

function fit(vector: readonly number[], dimensions: number, model: string): number[] {
  if (vector.length === dimensions) return [...vector];
  if (vector.length < dimensions) {
    throw new Error(`embedding model ${JSON.stringify(model)} returned ${vector.length} dimensions, fewer than MAPELITES_CODE_EMBEDDING_DIMENSIONS=${dimensions}`);
  }
  const cut = vector.slice(0, dimensions);
  const norm = Math.hypot(...cut) || 1;
  return cut.map((x) => x / norm);
}

export class OpenAiEmbedder implements TextEmbedder {
  readonly id: string;
  readonly dimensions: number;
  private readonly options: OpenAiEmbedderOptions;
  private readonly client: OpenAI;
  /** Whether the server accepted the `dimensions` parameter; some local servers reject it. */
  private sendDimensions = true;

  constructor(options: OpenAiEmbedderOptions) {
    this.options = options;
    this.dimensions = options.settings.dimensions;
    this.id = `openai:${options.settings.model}:${options.settings.dimensions}`;
    this.client = options.client ?? openAiClient(options.endpoint);
  }

  async embed(texts: string[]): Promise<number[][]> {
    const size = this.options.settings.batchSize;
    // Bounded: a commit of a thousand files must not open a hundred requests at once.
    const limit = pLimit(this.options.settings.concurrency ?? 1);
    const batches: Array<Promise<number[][]>> = [];
    for (let start = 0; start < texts.length; start += size) {
      const slice = texts.slice(start, start + size);
      batches.push(limit(() => this.batch(slice)));
    }
    return (await Promise.all(batches)).flat();
  }

  private async batch(texts: string[]): Promise<number[][]> {
    const { model } = this.options.settings;
    // An empty input is rejected by OpenAI; a single space embeds as "nothing".
    const input = texts.map((t) => (t === '' ? ' ' : t));
    const started = performance.now();
    try {
      let response;
      try {
        response = await this.client.embeddings.create(
          { model, input, encoding_format: 'float', ...(this.sendDimensions ? { dimensions: this.dimensions } : {}) },
          { signal: this.options.signal },
        );
      } catch (error) {
        const status = (error as { status?: number }).status;
        if (!this.sendDimensions || (status !== 400 && status !== 422)) throw error;
        // A server that does not know `dimensions`: ask without it and cut the vectors here. When
        // that is refused too, the 400 was about something else (an input too long): keep asking
        // with `dimensions`.
        response = await this.client.embeddings.create({ model, input, encoding_format: 'float' }, { signal: this.options.signal });
        this.sendDimensions = false;
      }
      const data = Array.isArray(response?.data) ? [...response.data] : [];
      if (data.length !== texts.length) throw new Error(`expected ${texts.length} embeddings, got ${data.length}`);
      data.sort((a, b) => a.index - b.index);
      const vectors = data.map((d) => {
        if (!Array.isArray(d.embedding)) throw new Error('an embedding is not an array of numbers');
        return fit(d.embedding, this.dimensions, model);
      });
      const tokens = response.usage?.prompt_tokens ?? Math.ceil(input.join('').length / 4);
      await this.record(tokens, performance.now() - started, true);
      return vectors;
    } catch (error) {
      await this.record(0, performance.now() - started, false, (error as Error).message);
      throw describeCallError(error, this.options.endpoint, model);
    }
  }

  private async record(tokens: number, latencyMs: number, ok: boolean, error?: string): Promise<void> {
    const usage = this.options.usage;
    if (!usage) return;
    const model = this.options.settings.model;
    await recordModelCall(usage.pool, {
      experimentId: usage.experimentId, jobId: null, purpose: 'embedding', model, promptTokens: tokens, completionTokens: 0,
      latencyMs, costUsd: costUsd(usage.prices, model, tokens, 0), ok, error,
    }).catch(() => undefined);
  }
}

/**
 * A file embedder over a text embedder with a bounded context: each file is cut into chunks of
 * about 80 lines (see chunk.ts), every chunk is embedded, and the file's vector is the mean of its
 * chunks' vectors, L2-normalised. So no file is too long for the model, and a file's vector still
 * reflects all of it (up to the chunk cap).
 */
export class ChunkedEmbedder implements TextEmbedder {
  readonly id: string;
  readonly dimensions: number;
  private readonly inner: TextEmbedder;
  private readonly chunk: ChunkSettings;

  constructor(inner: TextEmbedder, chunk: ChunkSettings = DEFAULT_CHUNK_SETTINGS) {
    this.inner = inner;
    this.chunk = chunk;
    this.dimensions = inner.dimensions;
    // The chunking shapes the vectors, so it is part of the cache key.
    this.id = `${inner.id}:chunks-${chunk.targetLines}-${chunk.minLines}-${chunk.overlapLines}-${chunk.maxChunks}`;
  }

  async embed(texts: string[]): Promise<number[][]> {
    const owners: number[] = [];
    const pieces: string[] = [];
    texts.forEach((text, index) => {
      const chunks = chunkText(text, this.chunk);
      // An empty file still gets a vector, as it did unchunked.
      for (const chunk of chunks.length > 0 ? chunks.map((c) => c.text) : ['']) {
        owners.push(index);
        pieces.push(chunk);
      }
    });
    const vectors = pieces.length > 0 ? await this.inner.embed(pieces) : [];
    const sums = texts.map(() => new Array<number>(this.dimensions).fill(0));
    const counts = texts.map(() => 0);
    vectors.forEach((vector, i) => {
      const sum = sums[owners[i]];
      for (let d = 0; d < sum.length; d++) sum[d] += vector[d] ?? 0;
      counts[owners[i]] += 1;
    });
    return sums.map((sum, i) => {
      const mean = sum.map((value) => value / Math.max(counts[i], 1));
      const norm = Math.hypot(...mean);
      return norm > 0 ? mean.map((value) => value / norm) : mean;
    });
  }
}

/**
 * The embedder the settings describe (`OPENAI_*`, `MAPELITES_CODE_EMBEDDING_*`, `MAPELITES_CHUNK_*`):
 * files chunked for the model, calls recorded against the experiment.
 */
export function embedderFromSettings(settings: Settings, pool: Pool, signal?: AbortSignal): ChunkedEmbedder {
  const model = new OpenAiEmbedder({
    endpoint: settings.agent.openai,
    settings: settings.agent.embeddings,
    usage: { pool, experimentId: settings.experiment.uuid, prices: priceTableFromSettings(settings) },
    signal,
  });
  return new ChunkedEmbedder(model, settings.agent.embeddings.chunk);
}
