import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentRequest, AgentResult, MutationAgent } from '../agent.ts';
import { jobEnvironment, runJobCommand } from '../job-command.ts';
import { basicPrompt } from '../command-prompt.ts';

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
  /** Needs the network in the sandbox whatever WORKER_SANDBOX_NETWORK says (a CLI calling its API). */
  readonly network?: boolean;
  /** More directories it may write in the sandbox (a CLI's own state under HOME). */
  readonly writable?: readonly string[];
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
    const promptFile = path.join(worktree.metaDirectory, 'prompt.md');
    await writeFile(promptFile, prompt);
    const { result, artifacts } = await runJobCommand(
      {
        label: `agent command ${JSON.stringify(this.options.command[0])}`,
        argv: this.options.command,
        timeoutSeconds: this.options.timeoutSeconds,
        artifact: 'agent_output',
        network: this.options.network,
        writable: this.options.writable,
      },
      {
        worktree,
        env: { ...jobEnvironment(context, worktree, promptFile), ...this.options.env },
        input: this.options.promptOnStdin ? prompt : JSON.stringify(context, null, 2),
        signal: request.signal,
        artifacts: { prompt },
      },
    );
    const trailer = trailingJson(result.stdout);
    const summary = typeof trailer?.summary === 'string' ? trailer.summary : typeof trailer?.commit_message === 'string' ? trailer.commit_message : undefined;
    return { commitMessage: summary, artifacts };
  }
}
