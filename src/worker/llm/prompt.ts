import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { recentFailuresOnParent } from '../../shared/db/jobs.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import { getCommitCard, getMetrics, type MetricValue } from '../../shared/db/results.ts';
import { diff, hasCommit } from '../../shared/git.ts';
import { DEFAULT_PROMPTS_DIR, type AgentSettings, type EditMode } from '../../shared/settings/agent.ts';
import type { AgentRequest } from '../agent.ts';
import { BLOCK_END, BLOCK_START, collectEvolvable, type EvolvableSet } from './evolve.ts';

/**
 * The prompt a job's model (or coding-agent CLI) gets, built from the job and the archive: goal,
 * constraints and acceptance criteria; the parent's evolvable code and metrics; each inspiration's
 * diff from the parent with its metrics and summary; the last failures on the same parent.
 *
 * The wording lives in Markdown templates (`prompts/*.md`, or `WORKER_PROMPTS_DIR` file by file)
 * with `{{name}}` placeholders, so a user can rewrite it without touching code.
 */

const INSPIRATION_DIFF_CHARS = 12_000;
const FAILURE_CHARS = 1_500;
const DEFAULT_GOAL = 'Improve the program so that its evaluator scores it higher.';

export interface InspirationMaterial {
  readonly commit: string;
  readonly summary: string;
  readonly metrics: readonly MetricValue[];
  /** Undefined when the commit is not in this clone yet. */
  readonly diff: string | undefined;
}

export interface PromptMaterial {
  readonly jobId: string;
  readonly goal: string;
  readonly constraints: string | undefined;
  readonly acceptanceCriteria: string | undefined;
  readonly parentCommit: string;
  readonly evolvable: EvolvableSet;
  readonly parentMetrics: readonly MetricValue[];
  readonly inspirations: readonly InspirationMaterial[];
  readonly failures: ReadonlyArray<{ readonly id: string; readonly lastError: string | null }>;
}

function payloadText(payload: Record<string, unknown>, ...keys: string[]): string | undefined {
  for (const key of keys) {
    const value = payload[key];
    if (typeof value === 'string' && value.trim() !== '') return value.trim();
    if (Array.isArray(value) && value.every((v) => typeof v === 'string') && value.length > 0) return value.map((v) => `- ${v}`).join('\n');
  }
  return undefined;
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}\n… (${text.length - max} more characters cut)`;
}

/** Everything the templates need, read from the worktree, git and the database. */
export async function gatherMaterial(db: Queryable, settings: AgentSettings, request: AgentRequest): Promise<PromptMaterial> {
  const { context, worktree } = request;
  const evolvable = await collectEvolvable(worktree.directory, settings.evolvePaths);
  const paths = settings.evolvePaths.length > 0 ? [...settings.evolvePaths] : evolvable.files.map((f) => f.path);
  const inspirations: InspirationMaterial[] = [];
  for (const commit of context.inspirations) {
    if (commit === context.baseCommit) continue;
    const card = await getCommitCard(db, context.experimentId, commit);
    const metrics = await getMetrics(db, context.experimentId, commit);
    const present = await hasCommit(worktree.directory, commit);
    const pathspec = paths.map((p) => `:(glob)${p}`);
    const text = present ? await diff(worktree.directory, context.baseCommit, commit, pathspec) : undefined;
    inspirations.push({
      commit,
      summary: card ? [card.message, card.summary].filter((s) => s && s.trim() !== '').join('\n\n') : '',
      metrics,
      diff: text === undefined ? undefined : clip(text, INSPIRATION_DIFF_CHARS),
    });
  }
  return {
    jobId: context.jobId,
    goal: payloadText(context.payload, 'goal') ?? context.goal ?? DEFAULT_GOAL,
    constraints: payloadText(context.payload, 'constraints') ?? settings.constraints,
    acceptanceCriteria: payloadText(context.payload, 'acceptance_criteria', 'acceptanceCriteria') ?? settings.acceptanceCriteria,
    parentCommit: context.baseCommit,
    evolvable,
    parentMetrics: await getMetrics(db, context.experimentId, context.baseCommit),
    inspirations,
    failures: settings.failureContext > 0 ? await recentFailuresOnParent(db, context.experimentId, context.baseCommit, settings.failureContext) : [],
  };
}

export function formatMetrics(metrics: readonly MetricValue[]): string {
  if (metrics.length === 0) return '(not measured yet)';
  return metrics
    .map((m) => `- ${m.name}: ${m.value}${m.unit ? ` ${m.unit}` : ''} (${m.higherIsBetter === false ? 'lower' : 'higher'} is better)`)
    .join('\n');
}

function fenceFor(content: string): string {
  let fence = '```';
  while (content.includes(fence)) fence += '`';
  return fence;
}

/** The evolvable files in full (`inline`), or just their names and regions for a CLI that reads them itself. */
export function formatCode(evolvable: EvolvableSet, inline: boolean): string {
  if (evolvable.files.length === 0) {
    return evolvable.globs.length > 0 ? `(no file matches ${evolvable.globs.join(', ')} yet; you may create one)` : '(no evolvable file found)';
  }
  const note = (marked: boolean): string => (marked ? ` (change only the lines between ${BLOCK_START} and ${BLOCK_END})` : '');
  if (!inline) return evolvable.files.map((f) => `- ${f.path}${note(f.marked)}`).join('\n');
  return evolvable.files
    .map((f) => {
      const fence = fenceFor(f.content);
      const lang = path.extname(f.path).slice(1);
      return `${f.path}${note(f.marked)}\n${fence}${lang}\n${f.content}${f.content.endsWith('\n') ? '' : '\n'}${fence}`;
    })
    .join('\n\n');
}

export function formatInspirations(inspirations: readonly InspirationMaterial[]): string {
  if (inspirations.length === 0) return '(none)';
  return inspirations
    .map((insp, i) => {
      const parts = [`## Inspiration ${i + 1}: commit ${insp.commit.slice(0, 12)}`];
      if (insp.summary.trim() !== '') parts.push(insp.summary.trim());
      parts.push(`Metrics:\n${formatMetrics(insp.metrics)}`);
      if (insp.diff === undefined) parts.push('(its diff is not available on this worker)');
      else if (insp.diff.trim() === '') parts.push('(no difference in the evolvable code)');
      else parts.push(`${fenceFor(insp.diff)}diff\n${insp.diff}${insp.diff.endsWith('\n') ? '' : '\n'}${fenceFor(insp.diff)}`);
      return parts.join('\n\n');
    })
    .join('\n\n');
}

export function formatFailures(failures: PromptMaterial['failures']): string {
  if (failures.length === 0) return '(none)';
  return failures.map((f) => `- job ${f.id}: ${clip((f.lastError ?? 'failed without a message').trim(), FAILURE_CHARS)}`).join('\n');
}

/** Values for `{{name}}` placeholders shared by every template. */
export function templateValues(material: PromptMaterial, options: { inline: boolean; plan?: string }): Record<string, string> {
  return {
    job_id: material.jobId,
    goal: material.goal,
    constraints: material.constraints ?? '(none given)',
    acceptance_criteria: material.acceptanceCriteria ?? '(none given; the evaluator\'s metrics decide)',
    parent_commit: material.parentCommit,
    code: formatCode(material.evolvable, options.inline),
    parent_metrics: formatMetrics(material.parentMetrics),
    inspirations: formatInspirations(material.inspirations),
    failures: formatFailures(material.failures),
    plan: options.plan?.trim() || '(no plan: decide the change yourself)',
  };
}

/** `{{name}}` replaced by `values[name]`; unknown names become empty. */
export function renderTemplate(template: string, values: Readonly<Record<string, string>>): string {
  return template.replace(/\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}/gi, (_, name: string) => values[name.toLowerCase()] ?? '');
}

/** Templates from the user's directory, each falling back to the shipped one. */
export class PromptTemplates {
  private readonly directory: string;
  private readonly cache = new Map<string, Promise<string>>();

  constructor(directory: string) {
    this.directory = directory;
  }

  load(name: string): Promise<string> {
    let text = this.cache.get(name);
    if (!text) {
      const own = path.join(this.directory, `${name}.md`);
      const file = existsSync(own) ? own : path.join(DEFAULT_PROMPTS_DIR, `${name}.md`);
      text = readFile(file, 'utf8');
      this.cache.set(name, text);
    }
    return text;
  }

  async render(name: string, values: Readonly<Record<string, string>>): Promise<string> {
    return renderTemplate(await this.load(name), values);
  }
}

export interface ChatPrompt {
  readonly system: string;
  readonly user: string;
}

export async function codingPrompt(templates: PromptTemplates, material: PromptMaterial, editMode: EditMode, plan?: string): Promise<ChatPrompt> {
  const values = templateValues(material, { inline: true, plan });
  const editFormat = await templates.render(editMode === 'full' ? 'format-full' : 'format-diff', values);
  return {
    system: (await templates.render('system', { ...values, edit_format: editFormat })).trim(),
    user: (await templates.render('coding', values)).trim(),
  };
}

export async function planningPrompt(templates: PromptTemplates, material: PromptMaterial): Promise<ChatPrompt> {
  const values = templateValues(material, { inline: true });
  return {
    system: (await templates.render('system', { ...values, edit_format: '' })).trim(),
    user: (await templates.render('planning', values)).trim(),
  };
}

export async function retryMessage(templates: PromptTemplates, reasons: readonly string[]): Promise<string> {
  return (await templates.render('retry', { reasons: reasons.map((r) => `- ${r}`).join('\n') })).trim();
}

/** The prompt a coding-agent CLI (codex, claude) gets: the same material, files named rather than inlined. */
export async function cliPrompt(templates: PromptTemplates, material: PromptMaterial): Promise<string> {
  return `${(await templates.render('cli', templateValues(material, { inline: false }))).trim()}\n`;
}
