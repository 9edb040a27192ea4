import { createHash } from 'node:crypto';
import OpenAI from 'openai';
import type { Pool } from '../db/pool.ts';
import { recordModelCall } from '../db/usage.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { OpenAiEndpointSettings, WeightedModel } from '../settings/agent.ts';
import { costUsd, type PriceTable } from './pricing.ts';

/**
 * Chat completions against an OpenAI-compatible endpoint, with every call (successful or not)
 * recorded in `model_calls` with its tokens, latency and cost.
 *
 * Failure modes: the SDK retries connection errors, 408, 409, 429 and 5xx `maxRetries` times with
 * backoff (honouring `retry-after`); each request has its own timeout, and a timed-out request is
 * retried like a connection error; an aborted signal stops at once. What still fails becomes a
 * `ModelCallError` whose message says which of these happened.
 */

export type ChatMessage = { role: 'system' | 'user' | 'assistant'; content: string };

export interface ChatRequest {
  readonly jobId: string | null;
  /** `plan` or `code`: recorded with the call. */
  readonly purpose: string;
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly temperature: number;
  readonly maxTokens: number;
  readonly signal?: AbortSignal;
}

export interface ChatReply {
  readonly text: string;
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly latencyMs: number;
  readonly costUsd: number;
  readonly finishReason: string | null;
}

export class ModelCallError extends Error {
  override readonly name = 'ModelCallError';
  readonly kind: 'timeout' | 'aborted' | 'http' | 'connection' | 'malformed';
  constructor(kind: ModelCallError['kind'], message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.kind = kind;
  }
}

export interface UsageSink {
  readonly pool: Pool;
  readonly experimentId: string;
  readonly prices: PriceTable;
}

/** An SDK client for the endpoint; the key goes only to the SDK, never to a log. */
export function openAiClient(endpoint: OpenAiEndpointSettings): OpenAI {
  return new OpenAI({
    apiKey: endpoint.apiKey.reveal(),
    baseURL: endpoint.baseUrl,
    maxRetries: endpoint.maxRetries,
    timeout: Math.round(endpoint.requestTimeoutSeconds * 1000),
  });
}

/** Rough token count when a server reports no usage: about four characters a token. */
function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

export function describeCallError(error: unknown, endpoint: OpenAiEndpointSettings, model: string): ModelCallError {
  const where = `model ${JSON.stringify(model)} at ${endpoint.baseUrl}`;
  if (error instanceof ModelCallError) return error;
  if (error instanceof OpenAI.APIUserAbortError) return new ModelCallError('aborted', `the call to ${where} was cancelled`, { cause: error });
  if (error instanceof OpenAI.APIConnectionTimeoutError) {
    return new ModelCallError('timeout', `the call to ${where} timed out after ${endpoint.requestTimeoutSeconds}s (${endpoint.maxRetries} retries)`, { cause: error });
  }
  if (error instanceof OpenAI.APIConnectionError) {
    return new ModelCallError('connection', `cannot reach ${where}: ${errorMessage(error.cause ?? error)}`, { cause: error });
  }
  if (error instanceof OpenAI.APIError) {
    const retried = error.status === 429 || (error.status ?? 0) >= 500 ? ` after ${endpoint.maxRetries} retries` : '';
    return new ModelCallError('http', `${where} answered HTTP ${error.status ?? '?'}${retried}: ${error.message}`, { cause: error });
  }
  return new ModelCallError('malformed', `${where} sent a malformed reply: ${errorMessage(error)}`, { cause: error });
}

export class ChatModelClient {
  private readonly client: OpenAI;
  private readonly endpoint: OpenAiEndpointSettings;
  private readonly usage: UsageSink;
  private readonly logger: Logger;

  constructor(options: { endpoint: OpenAiEndpointSettings; usage: UsageSink; logger: Logger; client?: OpenAI }) {
    this.endpoint = options.endpoint;
    this.client = options.client ?? openAiClient(options.endpoint);
    this.usage = options.usage;
    this.logger = options.logger;
  }

  async complete(request: ChatRequest): Promise<ChatReply> {
    const started = performance.now();
    let promptTokens = 0;
    let completionTokens = 0;
    try {
      const completion = await this.client.chat.completions.create(
        {
          model: request.model,
          messages: request.messages.map((m) => ({ role: m.role, content: m.content })),
          temperature: request.temperature,
          max_tokens: request.maxTokens,
        },
        { signal: request.signal },
      );
      const choice = Array.isArray(completion?.choices) ? completion.choices[0] : undefined;
      const text = choice?.message?.content;
      promptTokens = completion?.usage?.prompt_tokens ?? estimateTokens(request.messages.map((m) => m.content).join('\n'));
      completionTokens = completion?.usage?.completion_tokens ?? estimateTokens(typeof text === 'string' ? text : '');
      if (typeof text !== 'string' || text.trim() === '') {
        throw new ModelCallError('malformed', `model ${JSON.stringify(request.model)} at ${this.endpoint.baseUrl} returned no message text (finish reason ${choice?.finish_reason ?? 'none'})`);
      }
      const latencyMs = performance.now() - started;
      const cost = costUsd(this.usage.prices, request.model, promptTokens, completionTokens);
      await this.record(request, { promptTokens, completionTokens, latencyMs, costUsd: cost, ok: true });
      this.logger.info({ model: request.model, purpose: request.purpose, promptTokens, completionTokens, ms: Math.round(latencyMs), costUsd: cost }, 'model call');
      return { text, model: request.model, promptTokens, completionTokens, latencyMs, costUsd: cost, finishReason: choice?.finish_reason ?? null };
    } catch (error) {
      const failure = describeCallError(error, this.endpoint, request.model);
      const latencyMs = performance.now() - started;
      const cost = costUsd(this.usage.prices, request.model, promptTokens, completionTokens);
      await this.record(request, { promptTokens, completionTokens, latencyMs, costUsd: cost, ok: false, error: failure.message });
      this.logger.warn({ model: request.model, purpose: request.purpose, kind: failure.kind, ms: Math.round(latencyMs), error: failure.message }, 'model call failed');
      throw failure;
    }
  }

  private async record(request: ChatRequest, call: { promptTokens: number; completionTokens: number; latencyMs: number; costUsd: number; ok: boolean; error?: string }): Promise<void> {
    try {
      await recordModelCall(this.usage.pool, { experimentId: this.usage.experimentId, jobId: request.jobId, purpose: request.purpose, model: request.model, ...call });
    } catch (error) {
      // Accounting must not fail the job; the cost is lost from the totals and the log says so.
      this.logger.error({ err: error, model: request.model }, 'could not record a model call');
    }
  }
}

/** A number in [0, 1) fixed by `seed`, so a retried job draws what its first attempt drew. */
export function seededUnit(seed: string): number {
  const digest = createHash('sha256').update(seed).digest();
  return digest.readUInt32BE(0) / 2 ** 32;
}

/** One model by weight, the draw fixed by the job id. */
export function drawModel(models: readonly WeightedModel[], seed: string): string {
  const total = models.reduce((sum, m) => sum + m.weight, 0);
  let point = seededUnit(seed) * total;
  for (const model of models) {
    if (point < model.weight) return model.name;
    point -= model.weight;
  }
  return models[models.length - 1].name;
}
