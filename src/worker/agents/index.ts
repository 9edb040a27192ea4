import type { AgentDependencies, MutationAgent } from '../agent.ts';
import { CommandAgent } from './command.ts';

/** The agent `WORKER_AGENT_BACKEND` names. */
export function createAgent(deps: AgentDependencies): MutationAgent {
  const agent = deps.settings.agent;
  switch (agent.backend) {
    case 'command':
      return new CommandAgent({ command: agent.command, timeoutSeconds: agent.timeoutSeconds });
  }
}
