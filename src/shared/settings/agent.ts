import { inspect } from 'node:util';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChunkSettings } from '../llm/chunk.ts';
import type { EnvReader } from './reader.ts';

/**
 * How jobs mutate code: which agent runs, which model it asks, how replies are applied, what a run
 * may cost. Every `WORKER_AGENT_*`, `WORKER_PLANNING_*`, `OPENAI_*` and `LORELEY_MAX_COST_USD`
 * value is read here, once.
 */

export const AGENT_BACKENDS = ['command', 'openai', 'codex', 'claude'] as const;
export type AgentBackend = (typeof AGENT_BACKENDS)[number];

export const EDIT_MODES = ['diff', 'full'] as const;
export type EditMode = (typeof EDIT_MODES)[number];

/** Where the shipped prompt templates live: `<package>/prompts`, whatever the working directory. */
export const DEFAULT_PROMPTS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../prompts');
/** The shipped price table. */
export const DEFAULT_PRICES_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../config/prices.json');
export const DEFAULT_OPENAI_BASE_URL = 'https://api.openai.com/v1';

/**
 * A credential that never reaches a log line, a JSON dump or `util.inspect` by accident: only
 * `reveal()` gives the value back.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  reveal(): string {
    return this.#value;
  }
  get present(): boolean {
    return this.#value !== '';
  }
  toJSON(): string {
    return '[redacted]';
  }
  toString(): string {
    return '[redacted]';
  }
  [inspect.custom](): string {
    return 'Secret([redacted])';
  }
}

export interface WeightedModel {
  readonly name: string;
  readonly weight: number;
}

export interface OpenAiEndpointSettings {
  readonly baseUrl: string;
  /** A placeholder when unset and the endpoint is not OpenAI's (local servers ignore it). */
  readonly apiKey: Secret;
  /** SDK retries on connection errors, 408, 409, 429 and 5xx, with backoff. */
  readonly maxRetries: number;
  /** Per request, each retry included separately. */
  readonly requestTimeoutSeconds: number;
}

export interface PlanningSettings {
  readonly enabled: boolean;
  /** Unset means the model drawn for the job. */
  readonly model: string | undefined;
  readonly maxTokens: number;
}

export interface CliAgentSettings {
  readonly bin: string;
  /** Appended after the preset's own flags. */
  readonly extraArgs: readonly string[];
}

export interface EmbeddingClientSettings {
  /** Set MAPELITES_CODE_EMBEDDING_MODEL to embed code with the endpoint instead of the offline embedder. */
  readonly enabled: boolean;
  readonly model: string;
  readonly dimensions: number;
  /** Texts per request. */
  readonly batchSize: number;
  /** Requests in flight at once (`MAPELITES_CODE_EMBEDDING_CONCURRENCY`); unset means one. */
  readonly concurrency?: number;
  /** How files are cut for the model (`MAPELITES_CHUNK_*`); unset means the original's defaults. */
  readonly chunk?: ChunkSettings;
}

export interface AgentSettings {
  readonly backend: AgentBackend;
  /** For the `command` backend: run in the worktree, no shell. */
  readonly command: readonly string[];
  /** The whole agent run of one job: every model call, or the CLI's run. */
  readonly timeoutSeconds: number;
  readonly openai: OpenAiEndpointSettings;
  /** One drawn per job, by weight, seeded from the job id. */
  readonly models: readonly WeightedModel[];
  readonly temperature: number;
  readonly maxTokens: number;
  readonly editMode: EditMode;
  /** Model replies per job before it fails: the first and the ones sent back with a reason. */
  readonly maxAttempts: number;
  /** Globs of evolvable files; empty means the regions between EVOLVE-BLOCK markers in any tracked file. */
  readonly evolvePaths: readonly string[];
  readonly promptsDir: string;
  /** Defaults for what a job's payload does not say. */
  readonly constraints: string | undefined;
  readonly acceptanceCriteria: string | undefined;
  /** Failed jobs on the same parent shown in the prompt (`{{failures}}`). */
  readonly failureContext: number;
  /** Finished attempts from the same parent shown with their scores and feedback (`{{attempts}}`). */
  readonly attemptContext: number;
  /** The archive's best programs shown (`{{top_programs}}`). */
  readonly topPrograms: number;
  /** Bound on the prompt; the optional parts are fitted into it by priority. */
  readonly promptMaxTokens: number;
  readonly planning: PlanningSettings;
  readonly codex: CliAgentSettings;
  readonly claude: CliAgentSettings;
  /** ANTHROPIC_API_KEY, for the `claude` CLI only; empty when unset. */
  readonly anthropicApiKey: Secret;
  /** Built-in prices, then this file's entries over them. */
  readonly pricesFile: string | undefined;
  /** Unset means no cost budget. */
  readonly maxCostUsd: number | undefined;
  readonly embeddings: EmbeddingClientSettings;
}

/**
 * `gpt-4o-mini` or `gpt-4o-mini:3,qwen2.5-coder:7b:1`: a trailing `:N` (a number) is the weight,
 * anything else stays part of the name, so Ollama tags such as `qwen2.5-coder:7b` work unweighted.
 */
export function parseWeightedModels(value: string): WeightedModel[] {
  const models: WeightedModel[] = [];
  for (const item of value.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const match = /^(.+):(-?\d+(?:\.\d+)?)$/.exec(item);
    const name = (match ? match[1] : item).trim();
    const weight = match ? Number(match[2]) : 1;
    if (name === '') throw new Error(`has an entry without a model name: ${JSON.stringify(item)}`);
    if (!(weight > 0)) throw new Error(`has a weight that is not positive: ${JSON.stringify(item)}`);
    models.push({ name, weight });
  }
  if (models.length === 0) throw new Error('names no model');
  return models;
}

function modelsFrom(reader: EnvReader): WeightedModel[] {
  const raw = reader.string('WORKER_AGENT_MODELS', 'gpt-4o-mini');
  try {
    return parseWeightedModels(raw);
  } catch (error) {
    reader.problem('WORKER_AGENT_MODELS', `${(error as Error).message} (write model or model:weight, comma-separated)`);
    return [{ name: 'gpt-4o-mini', weight: 1 }];
  }
}

function baseUrlFrom(reader: EnvReader): string {
  const raw = reader.string('OPENAI_BASE_URL', DEFAULT_OPENAI_BASE_URL);
  try {
    const parsed = new URL(raw);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('not http');
  } catch {
    reader.problem('OPENAI_BASE_URL', `must be an http(s) URL such as http://127.0.0.1:8000/v1, got ${JSON.stringify(raw)}`);
    return DEFAULT_OPENAI_BASE_URL;
  }
  return raw.replace(/\/+$/, '');
}

function cliFrom(reader: EnvReader, prefix: 'CODEX' | 'CLAUDE', bin: string): CliAgentSettings {
  return {
    bin: reader.string(`WORKER_${prefix}_BIN`, bin),
    extraArgs: reader.argv(`WORKER_${prefix}_EXTRA_ARGS`) ?? [],
  };
}

/**
 * `cwd` resolves relative paths when given; otherwise they stay as written and users resolve them
 * against `settings.cwd`.
 */
export function readAgentSettings(reader: EnvReader, cwd?: string): AgentSettings {
  const resolve = (p: string): string => (cwd === undefined ? p : path.resolve(cwd, p));
  const backend = reader.choice('WORKER_AGENT_BACKEND', AGENT_BACKENDS, 'command');
  const command = reader.argv('WORKER_AGENT_COMMAND');
  if (backend === 'command' && command === undefined && reader.raw('WORKER_AGENT_COMMAND') === undefined) {
    reader.problem('WORKER_AGENT_COMMAND', 'is required when WORKER_AGENT_BACKEND=command (the mutation command run in each job worktree)');
  }

  const baseUrl = baseUrlFrom(reader);
  const key = reader.optionalString('OPENAI_API_KEY');
  const needsKey = backend === 'openai' && baseUrl === DEFAULT_OPENAI_BASE_URL;
  if (needsKey && key === undefined) {
    reader.problem('OPENAI_API_KEY', 'is required for OpenAI\'s API (set OPENAI_BASE_URL for a local server that needs none)');
  }
  const openai: OpenAiEndpointSettings = {
    baseUrl,
    // The SDK refuses an empty key; local servers accept any.
    apiKey: new Secret(key ?? 'no-key'),
    maxRetries: reader.int('WORKER_AGENT_MAX_RETRIES', 3, { min: 0, max: 20 }),
    requestTimeoutSeconds: reader.float('WORKER_AGENT_REQUEST_TIMEOUT_SECONDS', 300, { min: 0.05 }),
  };

  const pricesFile = reader.optionalString('LORELEY_PRICES_FILE');
  const evolvePaths = reader.list('WORKER_EVOLVE_PATHS', []);
  for (const glob of evolvePaths) {
    if (path.isAbsolute(glob) || glob.split('/').includes('..')) {
      reader.problem('WORKER_EVOLVE_PATHS', `globs are relative to the repository root, got ${JSON.stringify(glob)}`);
    }
  }
  const maxCost = reader.raw('LORELEY_MAX_COST_USD');
  return {
    backend,
    command: command ?? [],
    timeoutSeconds: reader.int('WORKER_AGENT_TIMEOUT_SECONDS', 1800, { min: 1 }),
    openai,
    models: modelsFrom(reader),
    temperature: reader.float('WORKER_AGENT_TEMPERATURE', 0.7, { min: 0, max: 2 }),
    maxTokens: reader.int('WORKER_AGENT_MAX_TOKENS', 4096, { min: 16 }),
    editMode: reader.choice('WORKER_AGENT_EDIT_MODE', EDIT_MODES, 'diff'),
    maxAttempts: reader.int('WORKER_AGENT_MAX_ATTEMPTS', 3, { min: 1, max: 20 }),
    evolvePaths,
    promptsDir: resolve(reader.string('WORKER_PROMPTS_DIR', DEFAULT_PROMPTS_DIR)),
    constraints: reader.optionalString('WORKER_AGENT_CONSTRAINTS'),
    acceptanceCriteria: reader.optionalString('WORKER_AGENT_ACCEPTANCE_CRITERIA'),
    failureContext: reader.int('WORKER_AGENT_FAILURE_CONTEXT', 3, { min: 0, max: 50 }),
    attemptContext: reader.int('WORKER_AGENT_ATTEMPT_CONTEXT', 5, { min: 0, max: 50 }),
    topPrograms: reader.int('WORKER_AGENT_TOP_PROGRAMS', 3, { min: 0, max: 20 }),
    promptMaxTokens: reader.int('WORKER_AGENT_PROMPT_MAX_TOKENS', 16000, { min: 1000 }),
    planning: {
      enabled: reader.bool('WORKER_PLANNING_ENABLED', false),
      model: reader.optionalString('WORKER_PLANNING_MODEL'),
      maxTokens: reader.int('WORKER_PLANNING_MAX_TOKENS', 1024, { min: 16 }),
    },
    codex: cliFrom(reader, 'CODEX', 'codex'),
    claude: cliFrom(reader, 'CLAUDE', 'claude'),
    anthropicApiKey: new Secret(reader.optionalString('ANTHROPIC_API_KEY') ?? ''),
    pricesFile: pricesFile === undefined ? undefined : resolve(pricesFile),
    maxCostUsd: maxCost === undefined ? undefined : reader.float('LORELEY_MAX_COST_USD', 0, { min: 0 }),
    embeddings: {
      enabled: reader.raw('MAPELITES_CODE_EMBEDDING_MODEL') !== undefined,
      model: reader.string('MAPELITES_CODE_EMBEDDING_MODEL', 'text-embedding-3-small'),
      dimensions: reader.int('MAPELITES_CODE_EMBEDDING_DIMENSIONS', 256, { min: 1, max: 16384 }),
      batchSize: reader.int('MAPELITES_CODE_EMBEDDING_BATCH_SIZE', 64, { min: 1, max: 2048 }),
      concurrency: reader.int('MAPELITES_CODE_EMBEDDING_CONCURRENCY', 4, { min: 1, max: 64 }),
      chunk: {
        targetLines: reader.int('MAPELITES_CHUNK_TARGET_LINES', 80, { min: 1 }),
        minLines: reader.int('MAPELITES_CHUNK_MIN_LINES', 20, { min: 1 }),
        overlapLines: reader.int('MAPELITES_CHUNK_OVERLAP_LINES', 8, { min: 0 }),
        maxChunks: reader.int('MAPELITES_CHUNK_MAX_CHUNKS_PER_FILE', 64, { min: 1 }),
      },
    },
  };
}
