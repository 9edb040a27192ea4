import type { Pool } from '../shared/db/pool.ts';
import type { Logger } from '../shared/logger.ts';
import type { Settings } from '../shared/settings/index.ts';
import type { JobWorktree } from './repository.ts';

/** What every agent and evaluator is told about the job, also written to `context.json`. */
export interface JobContext {
  readonly jobId: string;
  readonly experimentId: string;
  readonly namespace: string;
  readonly kind: string;
  readonly baseCommit: string;
  readonly inspirations: readonly string[];
  readonly goal: string | null;
  readonly payload: Record<string, unknown>;
  readonly island: number;
  readonly branch: string;
  readonly worktree: string;
  readonly attempt: number;
}

export interface AgentRequest {
  readonly context: JobContext;
  readonly worktree: JobWorktree;
  readonly signal: AbortSignal;
  readonly logger: Logger;
}

export interface AgentResult {
  /** Becomes the commit message when present. */
  readonly commitMessage?: string;
  /** Stored as job artifacts by kind (agent output, prompt, raw reply, …). */
  readonly artifacts: Readonly<Record<string, string>>;
}

/**
 * Changes the code in a job's worktree. It edits files only; the worker commits, pushes and
 * evaluates. A failure is an `EvolutionWorkerError` (with artifacts worth keeping).
 */
export interface MutationAgent {
  readonly name: string;
  mutate(request: AgentRequest): Promise<AgentResult>;
}

export interface AgentDependencies {
  readonly settings: Settings;
  readonly pool: Pool;
  readonly logger: Logger;
}
