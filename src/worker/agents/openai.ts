import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EvolutionWorkerError } from '../../shared/errors.ts';
import { gitAt } from '../../shared/git.ts';
import type { AgentDependencies, AgentRequest, AgentResult, MutationAgent } from '../agent.ts';
import { ChatModelClient, drawModel, ModelCallError, type ChatMessage } from '../../shared/llm/client.ts';
import { applySearchReplace, normalizeRepoPath, parseFullFiles, parseSearchReplace } from '../llm/edits.ts';
import { regionViolation, writable, type EvolvableSet } from '../llm/evolve.ts';
import { priceTableFromSettings } from '../../shared/llm/pricing.ts';
import { codingPrompt, gatherMaterial, planningPrompt, PromptTemplates, retryMessage, type ChatPrompt } from '../llm/prompt.ts';

/**
 * The `openai` backend: asks a chat model on an OpenAI-compatible endpoint for edits and applies
 * them to the job's worktree.
 *
 * One job: draw a model (seeded by the job id); optionally ask for a plan; ask for edits; apply
 * them to the files as checked out. A reply that does not parse or apply, or that touches code
 * outside the evolvable regions, changes nothing and goes back to the model with the reasons, up
 * to `WORKER_AGENT_MAX_ATTEMPTS` replies. Then the job fails with the prompt and every reply kept.
 */

type Outcome = { ok: true; files: Map<string, string>; summary: string | undefined } | { ok: false; reasons: string[] };

const COMMIT_MESSAGE_CHARS = 2000;

export class OpenAiAgent implements MutationAgent {
  readonly name = 'openai';
  private readonly deps: AgentDependencies;
  private readonly client: ChatModelClient;
  private readonly templates: PromptTemplates;

  constructor(deps: AgentDependencies, client?: ChatModelClient) {
    this.deps = deps;
    const { settings } = deps;
    const agent = settings.agent;
    this.client = client ?? new ChatModelClient({
      endpoint: agent.openai,
      usage: { pool: deps.pool, experimentId: settings.experiment.uuid, prices: priceTableFromSettings(settings) },
      logger: deps.logger,
    });
    this.templates = new PromptTemplates(path.resolve(settings.cwd, agent.promptsDir));
  }

  async mutate(request: AgentRequest): Promise<AgentResult> {
    const settings = this.deps.settings.agent;
    const { context, worktree, logger } = request;
    const signal = AbortSignal.any([request.signal, AbortSignal.timeout(settings.timeoutSeconds * 1000)]);
    const model = drawModel(settings.models, context.jobId);
    const material = await gatherMaterial(this.deps.pool, settings, request, this.deps.settings.archive);
    const evolvable = material.evolvable;
    if (evolvable.files.length === 0 && evolvable.globs.length === 0) {
      throw new EvolutionWorkerError(
        'no evolvable code: set WORKER_EVOLVE_PATHS to globs of the files to evolve, or mark regions with EVOLVE-BLOCK-START / EVOLVE-BLOCK-END comments',
      );
    }
    logger.info({ model, files: evolvable.files.map((f) => f.path), inspirations: material.inspirations.length }, 'asking the model for a mutation');

    const artifacts: Record<string, string> = { model };
    const replies: string[] = [];
    const fail = (message: string, cause?: unknown): EvolutionWorkerError => {
      if (replies.length > 0) artifacts.reply = formatReplies(replies);
      return new EvolutionWorkerError(message, { artifacts: { ...artifacts }, cause });
    };
    const call = async (purpose: string, callModel: string, messages: ChatMessage[], maxTokens: number): Promise<string> => {
      try {
        const reply = await this.client.complete({ jobId: context.jobId, purpose, model: callModel, messages, temperature: settings.temperature, maxTokens, signal });
        return reply.text;
      } catch (error) {
        const why = error instanceof ModelCallError && error.kind === 'aborted' && !request.signal.aborted
          ? `the agent ran past WORKER_AGENT_TIMEOUT_SECONDS=${settings.timeoutSeconds}`
          : (error as Error).message;
        throw fail(`${purpose === 'plan' ? 'planning' : 'coding'} call failed: ${why}`, error);
      }
    };

    let plan: string | undefined;
    if (settings.planning.enabled) {
      const prompt = await planningPrompt(this.templates, material);
      artifacts.plan_prompt = renderPrompt(prompt);
      plan = (await call('plan', settings.planning.model ?? model, asMessages(prompt), settings.planning.maxTokens)).trim();
      artifacts.plan = plan;
    }

    const prompt = await codingPrompt(this.templates, material, settings.editMode, plan);
    artifacts.prompt = renderPrompt(prompt);
    const messages = asMessages(prompt);
    let reasons: string[] = [];
    for (let attempt = 1; attempt <= settings.maxAttempts; attempt++) {
      const reply = await call('code', model, messages, settings.maxTokens);
      replies.push(reply);
      const outcome = await this.interpret(reply, evolvable, worktree.directory);
      if (outcome.ok) {
        await writeFiles(worktree.directory, outcome.files);
        artifacts.reply = formatReplies(replies);
        artifacts.diff = await worktreeDiff(worktree.directory, [...outcome.files.keys()]);
        const commitMessage = (outcome.summary ?? plan ?? '').trim().slice(0, COMMIT_MESSAGE_CHARS) || `Evolution job ${context.jobId}`;
        logger.info({ model, attempt, files: [...outcome.files.keys()] }, 'model edits applied');
        return { commitMessage, artifacts };
      }
      reasons = outcome.reasons;
      logger.warn({ model, attempt, reasons }, 'model reply could not be applied');
      if (attempt < settings.maxAttempts) {
        messages.push({ role: 'assistant', content: reply }, { role: 'user', content: await retryMessage(this.templates, reasons) });
      }
    }
    throw fail(`the model's edits could not be applied after ${settings.maxAttempts} ${settings.maxAttempts === 1 ? 'reply' : 'replies'}: ${reasons.join('; ')}`);
  }

  /** The new content of every file the reply changes, or why it cannot be applied. Writes nothing. */
  private async interpret(reply: string, evolvable: EvolvableSet, directory: string): Promise<Outcome> {
    const only = evolvable.files.length === 1 ? evolvable.files[0].path : undefined;
    const full = this.deps.settings.agent.editMode === 'full';
    const parsed = full ? parseFullFiles(reply, only) : parseSearchReplace(reply, only);
    const reasons = [...parsed.problems];
    if (parsed.edits.length === 0 && reasons.length === 0) {
      reasons.push(full
        ? 'the reply has no file in a fenced code block (write the path on a line, then the whole file in ``` fences)'
        : 'the reply has no SEARCH/REPLACE block (write the path on a line, then <<<<<<< SEARCH, the old lines, =======, the new lines, >>>>>>> REPLACE)');
    }
    const originals = new Map<string, string | undefined>();
    const files = new Map<string, string>();
    for (const edit of parsed.edits) {
      const label = 'index' in edit ? `block ${edit.index} (${edit.path})` : edit.path;
      const normal = normalizeRepoPath(edit.path);
      if ('problem' in normal) {
        reasons.push(`${label}: ${normal.problem}`);
        continue;
      }
      const file = normal.path;
      const access = writable(evolvable, file, directory);
      if (!access.ok) {
        reasons.push(`${label}: ${access.reason}`);
        continue;
      }
      if (!originals.has(file)) originals.set(file, access.existing?.content);
      const before = originals.get(file);
      const current = files.has(file) ? files.get(file) : before;
      let next: string;
      if ('search' in edit) {
        const applied = applySearchReplace(current, edit.search, edit.replace);
        if (!applied.ok) {
          reasons.push(`${label}: ${applied.reason}`);
          continue;
        }
        next = applied.content;
      } else {
        next = edit.content;
      }
      const violation = before === undefined ? undefined : regionViolation(before, next);
      if (violation) {
        reasons.push(`${label}: ${violation}`);
        continue;
      }
      files.set(file, next);
    }
    if (reasons.length > 0) return { ok: false, reasons };
    for (const [file, content] of files) if (originals.get(file) === content) files.delete(file);
    if (files.size === 0) return { ok: false, reasons: ['the edits change nothing: the new text equals the old'] };
    return { ok: true, files, summary: parsed.summary };
  }
}

/** The raw replies, as they came: one alone, or each under a header when the model was asked again. */
function formatReplies(replies: readonly string[]): string {
  if (replies.length === 1) return replies[0];
  return replies.map((reply, i) => `===== reply ${i + 1} =====\n${reply}`).join('\n\n');
}

function asMessages(prompt: ChatPrompt): ChatMessage[] {
  return [
    { role: 'system', content: prompt.system },
    { role: 'user', content: prompt.user },
  ];
}

function renderPrompt(prompt: ChatPrompt): string {
  return `## system\n\n${prompt.system}\n\n## user\n\n${prompt.user}\n`;
}

async function writeFiles(directory: string, files: ReadonlyMap<string, string>): Promise<void> {
  for (const [file, content] of files) {
    const target = path.join(directory, file);
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, content);
  }
}

/** The worktree's changes to `files` against HEAD, new files included. */
async function worktreeDiff(directory: string, files: readonly string[]): Promise<string> {
  const git = gitAt(directory);
  // Intent-to-add makes new files show in the diff; the worker stages everything anyway.
  const untracked = [];
  for (const file of files) {
    if (existsSync(path.join(directory, file)) && (await git.raw(['ls-files', '--', file])).trim() === '') untracked.push(file);
  }
  if (untracked.length > 0) await git.raw(['add', '--intent-to-add', '--', ...untracked]);
  return git.raw(['diff', '--no-color', 'HEAD', '--', ...files]);
}

