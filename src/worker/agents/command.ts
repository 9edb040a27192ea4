import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EvolutionWorkerError } from '../../shared/errors.ts';
import { runCommand, tail } from '../../shared/subprocess.ts';
import type { AgentRequest, AgentResult, JobContext, MutationAgent } from '../agent.ts';
import { basicPrompt } from '../prompt.ts';

const OUTPUT_ARTIFACT_CHARS = 64 * 1024;

/** Environment every command the worker runs gets, so scripts need not parse stdin. */
export function jobEnvironment(context: JobContext, files: { contextFile: string; promptFile?: string }): Record<string, string> {
  return {
    LORELEY_JOB_ID: context.jobId,
    LORELEY_EXPERIMENT_ID: context.experimentId,
    LORELEY_BASE_COMMIT: context.baseCommit,
    LORELEY_WORKTREE: context.worktree,
    LORELEY_JOB_CONTEXT: files.contextFile,
    ...(files.promptFile ? { LORELEY_PROMPT_FILE: files.promptFile } : {}),
  };
}

/** The last line of output when it is a JSON object, e.g. `{"summary": "…"}`. */
function trailingJson(output: string): Record<string, unknown> | undefined {
  const last = output.trim().split('\n').pop()?.trim();
  if (!last?.startsWith('{')) return undefined;
  try {
    const parsed: unknown = JSON.parse(last);
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface CommandAgentOptions {
  readonly name?: string;
  readonly command: readonly string[];
  readonly timeoutSeconds: number;
  /** Builds the prompt written to LORELEY_PROMPT_FILE (and piped on stdin when `promptOnStdin`). */
  readonly prompt?: (request: AgentRequest) => Promise<string> | string;
  readonly promptOnStdin?: boolean;
  readonly env?: Record<string, string>;
}

/**
 * Runs a command in the job's worktree: no shell, its own process group, a timeout. It gets the
 * job context as JSON on stdin (or the prompt, for coding-agent CLIs) and as files named in its
 * environment. A last output line `{"summary": "…"}` becomes the commit message.
 */
export class CommandAgent implements MutationAgent {
  readonly name: string;
  private readonly options: CommandAgentOptions;

  constructor(options: CommandAgentOptions) {
    this.name = options.name ?? 'command';
    this.options = options;
  }

  async mutate(request: AgentRequest): Promise<AgentResult> {
    const { context, worktree } = request;
    const prompt = await (this.options.prompt ?? ((r: AgentRequest) => basicPrompt(r.context)))(request);
    const contextJson = JSON.stringify(context, null, 2);
    const contextFile = path.join(worktree.metaDirectory, 'context.json');
    const promptFile = path.join(worktree.metaDirectory, 'prompt.md');
    await writeFile(contextFile, `${contextJson}\n`);
    await writeFile(promptFile, prompt);

    const result = await runCommand(this.options.command, {
      cwd: worktree.directory,
      env: { ...jobEnvironment(context, { contextFile, promptFile }), ...this.options.env },
      input: this.options.promptOnStdin ? prompt : contextJson,
      timeoutMs: this.options.timeoutSeconds * 1000,
      signal: request.signal,
    });
    const output = tail(`${result.stdout}${result.stderr ? `\n[stderr]\n${result.stderr}` : ''}`, OUTPUT_ARTIFACT_CHARS);
    const artifacts = { agent_output: output, prompt };
    const label = `agent command ${JSON.stringify(this.options.command[0])}`;
    if (result.failedToStart) throw new EvolutionWorkerError(`${label} could not start: ${result.failedToStart}`, { artifacts });
    if (result.canceled) throw new EvolutionWorkerError(`${label} was cancelled`, { artifacts });
    if (result.timedOut) throw new EvolutionWorkerError(`${label} timed out after ${this.options.timeoutSeconds}s`, { artifacts });
    if (result.exitCode !== 0) {
      const why = result.signal ? `was killed by ${result.signal}` : `exited with code ${result.exitCode}`;
      throw new EvolutionWorkerError(`${label} ${why}: ${tail(result.stderr || result.stdout, 300).trim()}`, { artifacts });
    }
    const trailer = trailingJson(result.stdout);
    const summary = typeof trailer?.summary === 'string' ? trailer.summary : typeof trailer?.commit_message === 'string' ? trailer.commit_message : undefined;
    return { commitMessage: summary, artifacts };
  }
}
