import type OpenAI from 'openai';
import type { Pool } from '../db/pool.ts';
import { recordModelCall } from '../db/usage.ts';
import type { EmbeddingClientSettings, OpenAiEndpointSettings } from '../settings/agent.ts';
import { describeCallError, openAiClient } from './client.ts';
import type { Settings } from '../settings/index.ts';
import { costUsd, priceTableFromSettings, type PriceTable } from './pricing.ts';

/**
 * Code embeddings from an OpenAI-compatible `/embeddings` endpoint, for the scheduler's
 * `embedding` behaviour descriptor (`MAPELITES_CODE_EMBEDDING_MODEL`, `…_DIMENSIONS`). Texts go in
 * batches of `batchSize`; vectors come back in input order, each of `dimensions` numbers. The
 * caller caches by blob hash under `id`, which changes with the model and the dimensions.
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
    const vectors: number[][] = [];
    const size = this.options.settings.batchSize;
    for (let start = 0; start < texts.length; start += size) {
      vectors.push(...(await this.batch(texts.slice(start, start + size))));
    }
    return vectors;
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
        // A server that does not know `dimensions`: ask without it and cut the vectors here.
        this.sendDimensions = false;
        response = await this.client.embeddings.create({ model, input, encoding_format: 'float' }, { signal: this.options.signal });
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
 * The embedder the settings describe (`OPENAI_*`, `MAPELITES_CODE_EMBEDDING_*`), recording its
 * calls against the experiment.
 */
export function embedderFromSettings(settings: Settings, pool: Pool, signal?: AbortSignal): OpenAiEmbedder {
  return new OpenAiEmbedder({
    endpoint: settings.agent.openai,
    settings: settings.agent.embeddings,
    usage: { pool, experimentId: settings.experiment.uuid, prices: priceTableFromSettings(settings) },
    signal,
  });
}
