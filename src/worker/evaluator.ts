import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import type { MetricValue } from '../shared/db/results.ts';
import { ConfigurationError, EvolutionWorkerError } from '../shared/errors.ts';
import type { CommandSettings } from '../shared/settings/index.ts';
import { tail } from '../shared/subprocess.ts';
import type { JobContext } from './agent.ts';
import { jobEnvironment, runJobCommand } from './job-command.ts';
import type { JobWorktree } from './repository.ts';

export const MAX_METRICS = 64;
export const MAX_METRIC_NAME_CHARS = 128;
export const MAX_METRIC_UNIT_CHARS = 32;
// Letters and digits of any script, space, and punctuation names use (`val/loss`, `acc@1`, `time (s)`).
const METRIC_NAME = /^[\p{L}\p{N}_ .\-/:@%+()[\]#,]+$/u;
const NAME_CHARACTERS = 'letters, digits, spaces and _ . - / : @ % + ( ) [ ] # ,';

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

function describeCharacter(char: string): string {
  const code = char.codePointAt(0) ?? 0;
  const hex = `U+${code.toString(16).toUpperCase().padStart(4, '0')}`;
  return code < 0x20 || code === 0x7f || (code >= 0xd800 && code <= 0xdfff) ? hex : `${JSON.stringify(char)} (${hex})`;
}

/** A metric name is stored, shown and used as a key: a sane length and character set. */
export function checkMetricName(name: string): void {
  const shown = JSON.stringify(name.length > 60 ? `${name.slice(0, 60)}…` : name);
  const length = [...name].length;
  if (name.trim() === '') throw new EvaluationParseError(`metric name ${shown} is empty`);
  if (length > MAX_METRIC_NAME_CHARS) throw new EvaluationParseError(`metric name ${shown} is ${length} characters long: the limit is ${MAX_METRIC_NAME_CHARS}`);
  if (!METRIC_NAME.test(name) || name !== name.trim()) {
    const chars = [...name];
    const index = chars.findIndex((char) => !METRIC_NAME.test(char));
    const why = index >= 0 ? `has ${describeCharacter(chars[index])} at position ${index + 1}` : 'starts or ends with a space';
    throw new EvaluationParseError(`metric name ${shown} ${why}: names may use ${NAME_CHARACTERS} (at most ${MAX_METRIC_NAME_CHARS} characters)`);
  }
}

function checkUnit(name: string, unit: string): void {
  if ([...unit].length > MAX_METRIC_UNIT_CHARS) throw new EvaluationParseError(`metric ${JSON.stringify(name)} has a unit longer than ${MAX_METRIC_UNIT_CHARS} characters`);
  if (/[\u0000-\u001f\u007f\ud800-\udfff]/.test(unit)) throw new EvaluationParseError(`metric ${JSON.stringify(name)} has a control character in its unit`);
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
      checkMetricName(entry.name);
      if (entry.unit !== undefined && entry.unit !== null && typeof entry.unit !== 'string') {
        throw new EvaluationParseError(`metric ${JSON.stringify(entry.name)} has a non-string "unit"`);
      }
      if (typeof entry.unit === 'string') checkUnit(entry.name, entry.unit);
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
      .map(([name, value]) => {
        checkMetricName(name);
        return { name, value: metricValue(name, value), unit: null, higherIsBetter: true };
      });
  }
  if (metrics.length > MAX_METRICS) throw new EvaluationParseError(`${metrics.length} metrics is more than the limit of ${MAX_METRICS}`);
  const seen = new Set<string>();
  for (const metric of metrics) {
    if (seen.has(metric.name)) throw new EvaluationParseError(`metric ${JSON.stringify(metric.name)} appears twice`);
    seen.add(metric.name);
  }
  return { summary, metrics };
}

/**
 * The evaluator's own files: the script among its command's arguments (absolute paths to regular
 * files; the program itself only when it is a `#!` script, not an interpreter binary) and
 * WORKER_EVALUATOR_FILES (files, or directories taken whole). Relative arguments name files in the
 * worktree, which are the candidate's to change.
 */
export function evaluatorFiles(command: readonly string[], extra: readonly string[] = []): string[] {
  const files = new Set<string>();
  command.forEach((arg, index) => {
    if (!path.isAbsolute(arg) || !isFile(arg)) return;
    if (index === 0 && !isScript(arg)) return;
    files.add(arg);
  });
  for (const entry of extra) for (const file of walk(entry)) files.add(file);
  return [...files].sort();
}

function isFile(file: string): boolean {
  try {
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function isScript(file: string): boolean {
  const head = Buffer.alloc(2);
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    return readSync(fd, head, 0, 2, 0) === 2 && head.toString('latin1') === '#!';
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

const MAX_WALKED_FILES = 10_000;

function walk(entry: string): string[] {
  let stat;
  try {
    stat = statSync(entry);
  } catch {
    return [entry]; // Missing: reported by the guard, which hashes it as absent.
  }
  if (!stat.isDirectory()) return [entry];
  const out: string[] = [];
  const pending = [entry];
  while (pending.length > 0 && out.length < MAX_WALKED_FILES) {
    const dir = pending.pop()!;
    for (const item of readdirSync(dir, { withFileTypes: true })) {
      if (item.name === '.git' || item.name === 'node_modules') continue;
      const full = path.join(dir, item.name);
      if (item.isDirectory()) pending.push(full);
      else if (item.isFile()) out.push(full);
    }
  }
  return out;
}

function digest(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return 'missing';
  }
}

/**
 * The evaluator's files as they were at start-up. A candidate that could rewrite them would decide
 * its own score (and every later candidate's), so a change stops the worker: `verify` throws a
 * ConfigurationError, which exits with code 78 and is not restarted.
 */
export class EvaluatorGuard {
  readonly files: readonly string[];
  private readonly digests: ReadonlyMap<string, string>;

  constructor(files: readonly string[]) {
    this.files = files;
    this.digests = new Map(files.map((file) => [file, digest(file)]));
  }

  static forSettings(settings: CommandSettings & { files?: readonly string[] }): EvaluatorGuard {
    return new EvaluatorGuard(evaluatorFiles(settings.command, settings.files ?? []));
  }

  /** The files whose content is not what it was at start-up. */
  changed(): string[] {
    return this.files.filter((file) => digest(file) !== this.digests.get(file));
  }

  verify(): void {
    const changed = this.changed();
    if (changed.length > 0) {
      throw new ConfigurationError(`the evaluator's files changed since the worker started (${changed.join(', ')}): a candidate may have rewritten its judge; check them and restart`);
    }
  }
}

let guard: EvaluatorGuard | undefined;

/** Set once at start-up; `evaluate` checks it before every evaluation. */
export function useEvaluatorGuard(next: EvaluatorGuard | undefined): void {
  guard = next;
}

/** Runs `WORKER_EVALUATOR_COMMAND` in the worktree and parses what it prints. */
export async function evaluate(settings: CommandSettings, context: JobContext, worktree: JobWorktree, signal: AbortSignal): Promise<Evaluation> {
  guard?.verify();
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
