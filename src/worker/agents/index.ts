import type { AgentDependencies, MutationAgent } from '../agent.ts';
import { createClaudeAgent, createCodexAgent } from './cli.ts';
import { CommandAgent } from './command.ts';
import { OpenAiAgent } from './openai.ts';

/** The agent `WORKER_AGENT_BACKEND` names. */
export function createAgent(deps: AgentDependencies): MutationAgent {
  const agent = deps.settings.agent;
  switch (agent.backend) {
    case 'command':
      return new CommandAgent({ command: agent.command, timeoutSeconds: agent.timeoutSeconds });
    case 'openai':
      return new OpenAiAgent(deps);
    case 'codex':
      return createCodexAgent(deps);
    case 'claude':
      return createClaudeAgent(deps);
  }
}
