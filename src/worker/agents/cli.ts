import os from 'node:os';
import path from 'node:path';
import type { AgentDependencies, AgentRequest } from '../agent.ts';
import { cliPrompt, gatherMaterial, PromptTemplates } from '../llm/prompt.ts';
import { CommandAgent } from './command.ts';

/**
 * Coding-agent CLIs as presets of the command agent: the prompt comes from the same builder as the
 * `openai` backend's (files named, not inlined: the CLI reads them itself) and goes in on stdin.
 *
 * - codex: `codex exec --full-auto … -` — non-interactive, may edit files in the worktree
 *   (workspace-write sandbox, no approval prompts), reads the prompt from stdin (`-`).
 * - claude: `claude -p --permission-mode acceptEdits --allowedTools … --output-format text` —
 *   print mode with file edits accepted without asking; the prompt is read from stdin.
 *
 * `WORKER_CODEX_BIN` / `WORKER_CLAUDE_BIN` name the executables; `WORKER_CODEX_EXTRA_ARGS` /
 * `WORKER_CLAUDE_EXTRA_ARGS` add flags (a model, a profile) after the preset's own.
 */

export const CLAUDE_ALLOWED_TOOLS = 'Read,Edit,MultiEdit,Write,Glob,Grep,LS';

export function codexArgv(bin: string, extraArgs: readonly string[]): string[] {
  return [bin, 'exec', '--full-auto', ...extraArgs, '-'];
}

export function claudeArgv(bin: string, extraArgs: readonly string[]): string[] {
  return [bin, '-p', '--permission-mode', 'acceptEdits', '--allowedTools', CLAUDE_ALLOWED_TOOLS, '--output-format', 'text', ...extraArgs];
}

/** OPENAI_API_KEY as configured (environment or .env), for the Codex CLI. */
function openAiKey(deps: AgentDependencies): Record<string, string> {
  const key = deps.settings.agent.openai.apiKey.reveal();
  return key && key !== 'no-key' ? { OPENAI_API_KEY: key } : keyFromEnvironment('OPENAI_API_KEY');
}

function keyFromEnvironment(name: string): Record<string, string> {
  const value = process.env[name];
  return value ? { [name]: value } : {};
}

function promptBuilder(deps: AgentDependencies): (request: AgentRequest) => Promise<string> {
  const { settings, pool } = deps;
  const templates = new PromptTemplates(path.resolve(settings.cwd, settings.agent.promptsDir));
  return async (request) => cliPrompt(templates, await gatherMaterial(pool, settings.agent, request));
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

export function createCodexAgent(deps: AgentDependencies): CommandAgent {
  const { codex } = deps.settings.agent;
  return cliAgent(deps, 'codex', codexArgv(codex.bin, codex.extraArgs), openAiKey(deps), ['.codex']);
}

export function createClaudeAgent(deps: AgentDependencies): CommandAgent {
  const { claude } = deps.settings.agent;
  return cliAgent(deps, 'claude', claudeArgv(claude.bin, claude.extraArgs), keyFromEnvironment('ANTHROPIC_API_KEY'), ['.claude', '.claude.json', '.config/claude']);
}
