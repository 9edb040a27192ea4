/**
 * What a coding-agent CLI says it used, read from its machine-readable output, so its runs count
 * towards `model_calls`, `loreley status` and `LORELEY_MAX_COST_USD` like the `openai` backend's.
 *
 * - `codex exec --json` prints one JSON event per line: `thread.started`, `turn.started`,
 *   `item.started|updated|completed` (the item's `type` is `agent_message`, `reasoning`,
 *   `command_execution`, `file_change`, …), `turn.completed` with
 *   `{"usage": {"input_tokens", "cached_input_tokens", "output_tokens"}}`, `turn.failed` with
 *   `{"error": {"message"}}`, and `error`. Codex reports tokens, not money: the cost comes from the
 *   price table for the model (`--model`/`-m` in `WORKER_CODEX_EXTRA_ARGS`, else Codex's default).
 * - `claude -p --output-format json` prints one object at the end:
 *   `{"type": "result", "subtype": "success"|"error_…", "is_error", "result", "duration_ms",
 *   "total_cost_usd", "usage": {"input_tokens", "cache_creation_input_tokens",
 *   "cache_read_input_tokens", "output_tokens"}, "modelUsage": {"<model>": {"inputTokens",
 *   "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens", "costUSD"}}}`. Claude
 *   reports its cost in USD; that figure is used as it is.
 *
 * Cached input tokens are counted as prompt tokens: the cost of a codex run is an upper bound.
 */

export interface CliUsage {
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Reported by the CLI (claude); undefined means "price it from the table" (codex). */
  readonly costUsd: number | undefined;
  readonly latencyMs: number | undefined;
}

export interface CliReport {
  /** One entry per model call the CLI reported (a codex turn, a claude model). */
  readonly usage: readonly CliUsage[];
  /** The agent's final message, where its `{"summary": …}` line is. */
  readonly finalMessage: string | undefined;
  /** The CLI's own account of a failure (a refused request, a failed turn). */
  readonly error: string | undefined;
}

/** Codex CLI's model when none is named; used only to price its tokens. */
export const CODEX_DEFAULT_MODEL = 'gpt-5-codex';

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0;
}

function jsonLines(output: string): Array<Record<string, unknown>> {
  const objects: Array<Record<string, unknown>> = [];
  for (const line of output.split('\n')) {
    const trimmed = line.trim();
    if (!trimmed.startsWith('{')) continue;
    try {
      const parsed = record(JSON.parse(trimmed));
      if (parsed) objects.push(parsed);
    } catch {
      // A line of plain text (stderr, a banner) among the events.
    }
  }
  return objects;
}

/** The value of `--model X`, `--model=X`, `-m X` or `-c model=X` in a CLI's extra arguments. */
export function modelFromArgs(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if ((arg === '--model' || arg === '-m') && args[i + 1]) return args[i + 1];
    if (arg.startsWith('--model=')) return arg.slice('--model='.length);
    if ((arg === '-c' || arg === '--config') && /^model\s*=/.test(args[i + 1] ?? '')) return args[i + 1].replace(/^model\s*=\s*/, '').replace(/^["']|["']$/g, '');
  }
  return undefined;
}

export function parseCodexEvents(output: string, model: string): CliReport {
  const usage: CliUsage[] = [];
  let finalMessage: string | undefined;
  let error: string | undefined;
  for (const event of jsonLines(output)) {
    const type = event.type;
    if (type === 'turn.completed') {
      const used = record(event.usage);
      if (used) usage.push({ model, promptTokens: count(used.input_tokens), completionTokens: count(used.output_tokens), costUsd: undefined, latencyMs: undefined });
    } else if (type === 'item.completed') {
      const item = record(event.item);
      if (item?.type === 'agent_message' && typeof item.text === 'string') finalMessage = item.text;
    } else if (type === 'turn.failed') {
      const message = record(event.error)?.message;
      if (typeof message === 'string') error = message;
    } else if (type === 'error' && typeof event.message === 'string') {
      error = event.message;
    }
  }
  return { usage, finalMessage, error };
}

export function parseClaudeResult(output: string, fallbackModel: string): CliReport {
  const result = jsonLines(output).reverse().find((object) => object.type === 'result');
  if (!result) return { usage: [], finalMessage: undefined, error: undefined };
  const latencyMs = typeof result.duration_ms === 'number' ? result.duration_ms : undefined;
  const usage: CliUsage[] = [];
  const byModel = record(result.modelUsage);
  if (byModel && Object.keys(byModel).length > 0) {
    for (const [model, entry] of Object.entries(byModel)) {
      const used = record(entry) ?? {};
      usage.push({
        model,
        promptTokens: count(used.inputTokens) + count(used.cacheReadInputTokens) + count(used.cacheCreationInputTokens),
        completionTokens: count(used.outputTokens),
        costUsd: count(used.costUSD),
        latencyMs,
      });
    }
  } else {
    const used = record(result.usage) ?? {};
    usage.push({
      model: fallbackModel,
      promptTokens: count(used.input_tokens) + count(used.cache_read_input_tokens) + count(used.cache_creation_input_tokens),
      completionTokens: count(used.output_tokens),
      costUsd: typeof result.total_cost_usd === 'number' ? count(result.total_cost_usd) : undefined,
      latencyMs,
    });
  }
  const text = typeof result.result === 'string' ? result.result : undefined;
  const failed = result.is_error === true || (typeof result.subtype === 'string' && result.subtype !== 'success');
  return { usage, finalMessage: text, error: failed ? (text ?? `claude ended with ${String(result.subtype)}`) : undefined };
}

/** The `{"summary": "…"}` (or `commit_message`) object on the last JSON-looking line of a message. */
export function summaryFrom(message: string | undefined): string | undefined {
  if (!message) return undefined;
  const lines = message.trim().split('\n').reverse();
  for (const line of lines) {
    const trimmed = line.trim().replace(/^`+|`+$/g, '');
    if (!trimmed.startsWith('{')) continue;
    try {
      const parsed = record(JSON.parse(trimmed));
      const summary = parsed?.summary ?? parsed?.commit_message;
      if (typeof summary === 'string' && summary.trim() !== '') return summary.trim();
    } catch {
      // Not JSON after all.
    }
  }
  return undefined;
}
