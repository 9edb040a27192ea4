import type { EnvReader } from './reader.ts';

export const AGENT_BACKENDS = ['command'] as const;
export type AgentBackend = (typeof AGENT_BACKENDS)[number];

export interface AgentSettings {
  readonly backend: AgentBackend;
  /** For the `command` backend: run in the worktree, no shell. */
  readonly command: readonly string[];
  readonly timeoutSeconds: number;
}

export function readAgentSettings(reader: EnvReader): AgentSettings {
  const backend = reader.choice('WORKER_AGENT_BACKEND', AGENT_BACKENDS, 'command');
  const command = reader.argv('WORKER_AGENT_COMMAND');
  if (backend === 'command' && command === undefined && reader.raw('WORKER_AGENT_COMMAND') === undefined) {
    reader.problem('WORKER_AGENT_COMMAND', 'is required when WORKER_AGENT_BACKEND=command (the mutation command run in each job worktree)');
  }
  return {
    backend,
    command: command ?? [],
    timeoutSeconds: reader.int('WORKER_AGENT_TIMEOUT_SECONDS', 1800, { min: 1 }),
  };
}
