import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A real HTTP server on 127.0.0.1 speaking the parts of the OpenAI protocol Loreley uses
 * (`POST /v1/chat/completions`, `POST /v1/embeddings`), answering chat requests from a script:
 * each request takes the next step. Every request is recorded with its parsed body.
 */

export type ChatStep =
  | { readonly reply: string; readonly promptTokens?: number; readonly completionTokens?: number; readonly model?: string }
  | { readonly status: number; readonly body?: unknown; readonly headers?: Record<string, string> }
  | { readonly hang: true }
  | { readonly raw: string; readonly contentType?: string };

export interface RecordedRequest {
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: any;
}

export interface FakeOpenAi {
  /** Ends with `/v1`, as OPENAI_BASE_URL. */
  readonly url: string;
  readonly requests: RecordedRequest[];
  readonly chatRequests: () => RecordedRequest[];
  /** Steps still unanswered. */
  readonly remaining: () => number;
  push(...steps: ChatStep[]): void;
  /** The most embeddings requests the server was answering at one time. */
  readonly embeddingsPeak: () => number;
  close(): Promise<void>;
}

export interface FakeOpenAiOptions {
  readonly embeddingDimensions?: number;
  readonly ignoreDimensions?: boolean;
  /**
   * Like a real embedding model's context: an input longer than this many characters is refused
   * with HTTP 400 and OpenAI's "maximum context length" message.
   */
  readonly maxInputChars?: number;
  /** Each embeddings answer waits this long, so concurrent requests overlap. */
  readonly embeddingDelayMs?: number;
  /** Served by GET /models; unset: 404. */
  readonly models?: string[];
}

/** A deterministic unit vector for a text. */
export function fakeVector(text: string, dimensions: number): number[] {
  const out: number[] = [];
  for (let i = 0; out.length < dimensions; i++) {
    const digest = createHash('sha256').update(`${i}:${text}`).digest();
    for (let j = 0; j + 4 <= digest.length && out.length < dimensions; j += 4) out.push(digest.readInt32BE(j) / 2 ** 31);
  }
  const norm = Math.hypot(...out);
  return out.map((x) => x / norm);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

export async function startFakeOpenAi(steps: ChatStep[] = [], options: FakeOpenAiOptions = {}): Promise<FakeOpenAi> {
  const queue = [...steps];
  const requests: RecordedRequest[] = [];
  let completions = 0;
  let embeddingsInFlight = 0;
  let embeddingsPeak = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body: any = undefined;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = Buffer.concat(chunks).toString('utf8');
      }
      const path = (req.url ?? '').replace(/\?.*$/, '');
      requests.push({ path, headers: req.headers, body });
      if (req.method === 'POST' && path.endsWith('/embeddings')) {
        const input: string[] = Array.isArray(body.input) ? body.input : [body.input];
        const dimensions = (options.ignoreDimensions ? undefined : body.dimensions) ?? options.embeddingDimensions ?? 16;
        const tooLong = options.maxInputChars === undefined ? -1 : input.findIndex((text) => text.length > options.maxInputChars!);
        embeddingsInFlight += 1;
        embeddingsPeak = Math.max(embeddingsPeak, embeddingsInFlight);
        setTimeout(() => {
          embeddingsInFlight -= 1;
          if (tooLong >= 0) {
            const message = `This model's maximum context length is ${Math.floor(options.maxInputChars! / 4)} tokens, however you requested ${Math.ceil(input[tooLong].length / 4)} tokens (input ${tooLong}). Please reduce your prompt.`;
            send(res, 400, { error: { message, type: 'invalid_request_error', param: 'input', code: 'context_length_exceeded' } });
            return;
          }
          send(res, 200, {
            object: 'list',
            model: body.model,
            data: input.map((text, index) => ({ object: 'embedding', index, embedding: fakeVector(text, dimensions) })).reverse(),
            usage: { prompt_tokens: input.join(' ').split(/\s+/).length, total_tokens: input.join(' ').split(/\s+/).length },
          });
        }, options.embeddingDelayMs ?? 0);
        return;
      }
      if (req.method === 'GET' && path.endsWith('/models') && options.models) {
        send(res, 200, { object: 'list', data: options.models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' })) });
        return;
      }
      if (req.method !== 'POST' || !path.endsWith('/chat/completions')) {
        send(res, 404, { error: { message: `no route ${req.method} ${path}`, type: 'invalid_request_error' } });
        return;
      }
      const step = queue.shift();
      if (!step) {
        send(res, 500, { error: { message: 'the fake server has no scripted reply left', type: 'server_error' } });
        return;
      }
      if ('hang' in step) return; // Never answers; close() drops the connection.
      if ('raw' in step) {
        res.writeHead(200, { 'content-type': step.contentType ?? 'application/json' });
        res.end(step.raw);
        return;
      }
      if ('status' in step) {
        send(res, step.status, step.body ?? { error: { message: `scripted ${step.status}`, type: 'scripted' } }, step.headers);
        return;
      }
      completions++;
      send(res, 200, {
        id: `chatcmpl-${completions}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: step.model ?? body.model,
        choices: [{ index: 0, message: { role: 'assistant', content: step.reply }, finish_reason: 'stop' }],
        usage: {
          prompt_tokens: step.promptTokens ?? 1000,
          completion_tokens: step.completionTokens ?? 200,
          total_tokens: (step.promptTokens ?? 1000) + (step.completionTokens ?? 200),
        },
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    chatRequests: () => requests.filter((r) => r.path.endsWith('/chat/completions')),
    remaining: () => queue.length,
    push: (...more) => queue.push(...more),
    embeddingsPeak: () => embeddingsPeak,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
