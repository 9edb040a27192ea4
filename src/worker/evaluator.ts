import type { MetricValue } from '../shared/db/results.ts';
import { EvolutionWorkerError } from '../shared/errors.ts';
import type { CommandSettings } from '../shared/settings/index.ts';
import { tail } from '../shared/subprocess.ts';
import type { JobContext } from './agent.ts';
import { jobEnvironment, runJobCommand } from './job-command.ts';
import type { JobWorktree } from './repository.ts';

export const MAX_METRICS = 64;

export interface Evaluation {
  readonly summary: string;
  readonly metrics: readonly MetricValue[];
  /** Everything the evaluator printed, kept as an artifact. */
  readonly output: string;
}

export class EvaluationParseError extends Error {
  override readonly name = 'EvaluationParseError';
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function metricValue(name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new EvaluationParseError(`metric ${JSON.stringify(name)} is not a finite number (got ${JSON.stringify(value) ?? String(value)})`);
  }
  return value;
}

/** The JSON object an evaluator printed: the whole output, or else its last line. */
function findJsonObject(stdout: string): Record<string, unknown> {
  const candidates = [stdout.trim(), stdout.trim().split('\n').pop()?.trim() ?? ''];
  for (const candidate of candidates) {
    if (!candidate.startsWith('{')) continue;
    try {
      const parsed: unknown = JSON.parse(candidate);
      if (isRecord(parsed)) return parsed;
    } catch {
      // Try the next candidate.
    }
  }
  throw new EvaluationParseError(`output is not a JSON object (last line: ${JSON.stringify(tail(candidates[1], 200))})`);
}

/**
 * Accepts `{"summary": str, "metrics": [{"name", "value", "unit"?, "higher_is_better"?}]}` or a
 * flat `{"name": number}` map (a string `summary` key allowed beside the numbers).
 */
export function parseEvaluation(stdout: string): { summary: string; metrics: MetricValue[] } {
  const object = findJsonObject(stdout);
  const summary = typeof object.summary === 'string' ? object.summary : '';
  let metrics: MetricValue[];
  if (Array.isArray(object.metrics)) {
    metrics = object.metrics.map((entry, index) => {
      if (!isRecord(entry) || typeof entry.name !== 'string' || entry.name.trim() === '') {
        throw new EvaluationParseError(`metrics[${index}] needs a non-empty string "name"`);
      }
      if (entry.unit !== undefined && entry.unit !== null && typeof entry.unit !== 'string') {
        throw new EvaluationParseError(`metric ${JSON.stringify(entry.name)} has a non-string "unit"`);
      }
      if (entry.higher_is_better !== undefined && typeof entry.higher_is_better !== 'boolean') {
        throw new EvaluationParseError(`metric ${JSON.stringify(entry.name)} has a non-boolean "higher_is_better"`);
      }
      return {
        name: entry.name,
        value: metricValue(entry.name, entry.value),
        unit: (entry.unit as string | undefined) ?? null,
        higherIsBetter: (entry.higher_is_better as boolean | undefined) ?? true,
      };
    });
  } else if (object.metrics !== undefined) {
    throw new EvaluationParseError('"metrics" must be a list of {"name", "value"} objects');
  } else {
    metrics = Object.entries(object)
      .filter(([name]) => name !== 'summary')
      .map(([name, value]) => ({ name, value: metricValue(name, value), unit: null, higherIsBetter: true }));
  }
  if (metrics.length > MAX_METRICS) throw new EvaluationParseError(`${metrics.length} metrics is more than the limit of ${MAX_METRICS}`);
  const seen = new Set<string>();
  for (const metric of metrics) {
    if (seen.has(metric.name)) throw new EvaluationParseError(`metric ${JSON.stringify(metric.name)} appears twice`);
    seen.add(metric.name);
  }
  return { summary, metrics };
}

/** Runs `WORKER_EVALUATOR_COMMAND` in the worktree and parses what it prints. */
export async function evaluate(settings: CommandSettings, context: JobContext, worktree: JobWorktree, signal: AbortSignal): Promise<Evaluation> {
  const label = `evaluator ${JSON.stringify(settings.command[0])}`;
  const { result, artifacts } = await runJobCommand(
    { label, argv: settings.command, timeoutSeconds: settings.timeoutSeconds, artifact: 'evaluator_output' },
    { worktree, env: jobEnvironment(context, worktree), input: JSON.stringify(context, null, 2), signal },
  );
  const output = artifacts.evaluator_output;
  try {
    return { ...parseEvaluation(result.stdout), output };
  } catch (error) {
    if (error instanceof EvaluationParseError) throw new EvolutionWorkerError(`${label} output is invalid: ${error.message}`, { artifacts });
    throw error;
  }
}
