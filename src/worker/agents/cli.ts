import os from 'node:os';
import path from 'node:path';
import { recordModelCall } from '../../shared/db/usage.ts';
import { EvolutionWorkerError } from '../../shared/errors.ts';
import { costUsd, priceTableFromSettings, type PriceTable } from '../../shared/llm/pricing.ts';
import type { AgentDependencies, AgentRequest, AgentResult, MutationAgent } from '../agent.ts';
import { CODEX_DEFAULT_MODEL, modelFromArgs, parseClaudeResult, parseCodexEvents, summaryFrom, type CliReport } from '../llm/cli-usage.ts';
import { cliPrompt, gatherMaterial, PromptTemplates } from '../llm/prompt.ts';
import { CommandAgent } from './command.ts';

/**
 * Coding-agent CLIs as presets of the command agent: the prompt comes from the same builder as the
 * `openai` backend's (files named, not inlined: the CLI reads them itself) and goes in on stdin.
 *
 * - codex: `codex exec --full-auto --json … -` — non-interactive, may edit files in the worktree
 *   (workspace-write sandbox, no approval prompts), reads the prompt from stdin (`-`), prints its
 *   events as JSON lines (token usage per turn, the final message).
 * - claude: `claude -p --permission-mode acceptEdits --allowedTools … --output-format json` —
 *   print mode with file edits accepted without asking; the prompt is read from stdin; the result
 *   comes as one JSON object with the final message, the tokens and the cost in USD.
 *
 * What each run used is recorded in `model_calls` (see cli-usage.ts), failed runs too, so
 * `LORELEY_MAX_COST_USD` caps these backends like the `openai` one.
 *
 * `WORKER_CODEX_BIN` / `WORKER_CLAUDE_BIN` name the executables; `WORKER_CODEX_EXTRA_ARGS` /
 * `WORKER_CLAUDE_EXTRA_ARGS` add flags (a model, a profile) after the preset's own.
 */

export const CLAUDE_ALLOWED_TOOLS = 'Read,Edit,MultiEdit,Write,Glob,Grep,LS';

export function codexArgv(bin: string, extraArgs: readonly string[]): string[] {
  return [bin, 'exec', '--full-auto', '--json', ...extraArgs, '-'];
}

export function claudeArgv(bin: string, extraArgs: readonly string[]): string[] {
  return [bin, '-p', '--permission-mode', 'acceptEdits', '--allowedTools', CLAUDE_ALLOWED_TOOLS, '--output-format', 'json', ...extraArgs];
}

/** OPENAI_API_KEY as configured (environment or .env), for the Codex CLI. */
function openAiKey(deps: AgentDependencies): Record<string, string> {
  const key = deps.settings.agent.openai.apiKey.reveal();
  return key && key !== 'no-key' ? { OPENAI_API_KEY: key } : keyFromEnvironment('OPENAI_API_KEY');
}

/** ANTHROPIC_API_KEY from the settings the supervisor handed over: a child's own environment carries no keys. */
function anthropicKey(deps: AgentDependencies): Record<string, string> {
  const key = deps.settings.agent.anthropicApiKey.reveal();
  return key ? { ANTHROPIC_API_KEY: key } : {};
}

function keyFromEnvironment(name: string): Record<string, string> {
  const value = process.env[name];
  return value ? { [name]: value } : {};
}

function promptBuilder(deps: AgentDependencies): (request: AgentRequest) => Promise<string> {
  const { settings, pool } = deps;
  const templates = new PromptTemplates(path.resolve(settings.cwd, settings.agent.promptsDir));
  return async (request) => cliPrompt(templates, await gatherMaterial(pool, settings.agent, request, settings.archive));
}

/**
 * A coding-agent CLI as a command agent: the builder's prompt on stdin, only its own credential.
 * In the sandbox it keeps the network (it calls its model's API) and may write its own state
 * directory under HOME (sessions, logs); the evaluator stays offline.
 */
function cliAgent(deps: AgentDependencies, name: string, command: string[], env: Record<string, string>, stateDirs: readonly string[]): CommandAgent {
  const home = os.homedir();
  return new CommandAgent({
    name, command, timeoutSeconds: deps.settings.agent.timeoutSeconds, prompt: promptBuilder(deps), promptOnStdin: true, env,
    network: true, writable: stateDirs.map((dir) => path.join(home, dir)),
  });
}

/**
 * A coding-agent CLI: a command agent (the builder's prompt on stdin, only its own credential)
 * whose machine-readable output is read for the commit message and the usage it reports.
 */
class CliAgent implements MutationAgent {
  readonly name: string;
  private readonly command: CommandAgent;
  private readonly deps: AgentDependencies;
  private readonly parse: (output: string) => CliReport;
  private readonly prices: PriceTable;

  constructor(deps: AgentDependencies, command: CommandAgent, parse: (output: string) => CliReport) {
    this.name = command.name;
    this.deps = deps;
    this.parse = parse;
    this.prices = priceTableFromSettings(deps.settings);
    this.command = command;
  }

  async mutate(request: AgentRequest): Promise<AgentResult> {
    const started = performance.now();
    let result: AgentResult;
    try {
      result = await this.command.mutate(request);
    } catch (error) {
      if (error instanceof EvolutionWorkerError) {
        const report = this.parse(error.artifacts.agent_output ?? '');
        await this.record(request, report, performance.now() - started, report.error ?? error.message);
        // The CLI's own reason (a refused request, a failed turn) says more than its exit code.
        if (report.error && !error.message.includes(report.error)) {
          throw new EvolutionWorkerError(`${error.message} (${this.name}: ${report.error.trim().slice(0, 500)})`, { artifacts: { ...error.artifacts }, cause: error });
        }
      }
      throw error;
    }
    const report = this.parse(result.artifacts.agent_output ?? '');
    await this.record(request, report, performance.now() - started, report.error);
    return { ...result, commitMessage: summaryFrom(report.finalMessage) ?? result.commitMessage };
  }

  private async record(request: AgentRequest, report: CliReport, elapsedMs: number, error: string | undefined): Promise<void> {
    const { settings, pool } = this.deps;
    for (const used of report.usage) {
      const cost = used.costUsd ?? costUsd(this.prices, used.model, used.promptTokens, used.completionTokens);
      try {
        await recordModelCall(pool, {
          experimentId: settings.experiment.uuid, jobId: request.context.jobId, purpose: 'code', model: used.model,
          promptTokens: used.promptTokens, completionTokens: used.completionTokens, latencyMs: used.latencyMs ?? elapsedMs / report.usage.length,
          costUsd: cost, ok: error === undefined, error,
        });
      } catch (dbError) {
        // Accounting must not fail the job; the cost is lost from the totals and the log says so.
        request.logger.error({ err: dbError, model: used.model }, `could not record the ${this.name} run's usage`);
      }
      request.logger.info({ model: used.model, promptTokens: used.promptTokens, completionTokens: used.completionTokens, costUsd: cost }, `${this.name} usage`);
    }
    if (report.usage.length === 0) request.logger.warn(`${this.name} reported no token usage: its cost is not counted`);
  }
}

export function createCodexAgent(deps: AgentDependencies): MutationAgent {
  const { codex } = deps.settings.agent;
  const model = modelFromArgs(codex.extraArgs) ?? CODEX_DEFAULT_MODEL;
  return new CliAgent(deps, cliAgent(deps, 'codex', codexArgv(codex.bin, codex.extraArgs), openAiKey(deps), ['.codex']), (output) => parseCodexEvents(output, model));
}

export function createClaudeAgent(deps: AgentDependencies): MutationAgent {
  const { claude } = deps.settings.agent;
  const model = modelFromArgs(claude.extraArgs) ?? 'claude';
  return new CliAgent(deps, cliAgent(deps, 'claude', claudeArgv(claude.bin, claude.extraArgs), anthropicKey(deps), ['.claude', '.claude.json', '.config/claude']), (output) => parseClaudeResult(output, model));
}
