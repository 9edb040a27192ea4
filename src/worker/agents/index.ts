import type { AgentDependencies, MutationAgent } from '../agent.ts';

/**
 * The agent `WORKER_AGENT_BACKEND` names. Each backend is loaded on demand: a worker running a
 * plain command never loads the OpenAI SDK (about 18 MB of resident memory).
 */
export async function createAgent(deps: AgentDependencies): Promise<MutationAgent> {
  const agent = deps.settings.agent;
  switch (agent.backend) {
    case 'command': {
      const { CommandAgent } = await import('./command.ts');
      return new CommandAgent({ command: agent.command, timeoutSeconds: agent.timeoutSeconds });
    }
    case 'openai': {
      const { OpenAiAgent } = await import('./openai.ts');
      return new OpenAiAgent(deps);
    }
    case 'codex': {
      const { createCodexAgent } = await import('./cli.ts');
      return createCodexAgent(deps);
    }
    case 'claude': {
      const { createClaudeAgent } = await import('./cli.ts');
      return createClaudeAgent(deps);
    }
  }
}
