import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { archivePlacements, attemptsOnParent, commitFeedback, topPrograms, type ArchivePlacement, type Attempt, type CommitFeedback } from '../../shared/db/feedback.ts';
import { recentFailuresOnParent } from '../../shared/db/jobs.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import { getCommitCard, getMetrics, type MetricValue } from '../../shared/db/results.ts';
import { diff, fetchAll, hasCommit } from '../../shared/git.ts';
import { DEFAULT_PROMPTS_DIR, type AgentSettings, type EditMode } from '../../shared/settings/agent.ts';
import type { AgentRequest } from '../agent.ts';
import { BLOCK_END, BLOCK_START, collectEvolvable, type EvolvableSet } from './evolve.ts';
import { CHARS_PER_TOKEN, fitSections, type Section } from './sections.ts';

/**
 * The prompt a job's model (or coding-agent CLI) gets, built from the job and the archive: goal,
 * constraints and acceptance criteria; the parent's evolvable code and metrics; the evaluator's
 * feedback on the parent (its summary and the end of its output); the last attempts made from this
 * parent, worse ones and failed ones too, with their scores and feedback; where the parent sits in
 * the archive; the archive's best programs; each inspiration's diff from the parent with its
 * metrics and summary. The optional parts share a token budget (WORKER_AGENT_PROMPT_MAX_TOKENS) in
 * that order of priority (see sections.ts).
 *
 * The wording lives in Markdown templates (`prompts/*.md`, or `WORKER_PROMPTS_DIR` file by file)
 * with `{{name}}` placeholders, so a user can rewrite it without touching code.
 */

const INSPIRATION_DIFF_CHARS = 12_000;
const TOP_PROGRAM_DIFF_CHARS = 6_000;
const FAILURE_CHARS = 1_500;
/** The end of the evaluator's output shown for the parent, and for each earlier attempt. */
const PARENT_OUTPUT_CHARS = 2_000;
const ATTEMPT_OUTPUT_CHARS = 600;
/** What the fixed parts of the templates (headings, instructions) take, beyond the values. */
const TEMPLATE_OVERHEAD_CHARS = 2_500;
const DEFAULT_GOAL = 'Improve the program so that its evaluator scores it higher.';

export interface InspirationMaterial {
  readonly commit: string;
  readonly summary: string;
  readonly metrics: readonly MetricValue[];
  /** Undefined when the commit is not in this clone yet. */
  readonly diff: string | undefined;
}

export interface TopProgramMaterial {
  readonly commit: string;
  readonly fitness: number;
  readonly summary: string;
  readonly metrics: readonly MetricValue[];
  /** Its diff from the parent (evolvable files only); undefined when not in this clone. */
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
  /** The fitness metric and its direction, to describe scores and deltas. */
  readonly fitness: { readonly metric: string; readonly higherIsBetter: boolean };
  readonly parentFeedback: CommitFeedback | undefined;
  readonly attempts: readonly Attempt[];
  readonly placements: readonly ArchivePlacement[];
  readonly topPrograms: readonly TopProgramMaterial[];
  /** WORKER_AGENT_PROMPT_MAX_TOKENS. */
  readonly budgetTokens: number;
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
export async function gatherMaterial(db: Queryable, settings: AgentSettings, request: AgentRequest, archive: FitnessSettings = DEFAULT_FITNESS): Promise<PromptMaterial> {
  const { context, worktree } = request;
  const evolvable = await collectEvolvable(worktree.directory, settings.evolvePaths);
  const paths = settings.evolvePaths.length > 0 ? [...settings.evolvePaths] : evolvable.files.map((f) => f.path);
  const pathspec = paths.map((p) => `:(glob)${p}`);
  let fetched = false;
  const diffFromParent = async (commit: string, max: number): Promise<string | undefined> => {
    if (!(await hasCommit(worktree.directory, commit))) {
      // Another worker's commit, pushed after this clone last fetched: fetch once, best effort (a
      // fetch racing another worker's on the shared clone may fail; the diff is then left out).
      if (fetched) return undefined;
      fetched = true;
      await fetchAll(worktree.directory).catch(() => undefined);
      if (!(await hasCommit(worktree.directory, commit))) return undefined;
    }
    return clip(await diff(worktree.directory, context.baseCommit, commit, pathspec), max);
  };
  const inspirations: InspirationMaterial[] = [];
  for (const commit of context.inspirations) {
    if (commit === context.baseCommit) continue;
    const card = await getCommitCard(db, context.experimentId, commit);
    inspirations.push({
      commit,
      summary: card ? [card.message, card.summary].filter((s) => s && s.trim() !== '').join('\n\n') : '',
      metrics: await getMetrics(db, context.experimentId, commit),
      diff: await diffFromParent(commit, INSPIRATION_DIFF_CHARS),
    });
  }
  const fitness = { metric: archive.fitnessMetric, higherIsBetter: archive.fitnessHigherIsBetter };
  const top: TopProgramMaterial[] = [];
  if (settings.topPrograms > 0) {
    for (const program of await topPrograms(db, context.experimentId, settings.topPrograms + 1, fitness.higherIsBetter)) {
      // The parent is shown in full already.
      if (program.commitHash === context.baseCommit || top.length >= settings.topPrograms) continue;
      top.push({
        commit: program.commitHash,
        fitness: program.fitness,
        summary: [program.message, program.summary].filter((s) => s && s.trim() !== '').join('\n\n'),
        metrics: await getMetrics(db, context.experimentId, program.commitHash),
        diff: await diffFromParent(program.commitHash, TOP_PROGRAM_DIFF_CHARS),
      });
    }
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
    fitness,
    parentFeedback: await commitFeedback(db, context.experimentId, context.baseCommit, PARENT_OUTPUT_CHARS),
    attempts: settings.attemptContext > 0
      ? await attemptsOnParent(db, context.experimentId, context.baseCommit, { limit: settings.attemptContext, fitnessMetric: fitness.metric, tailChars: ATTEMPT_OUTPUT_CHARS })
      : [],
    placements: await archivePlacements(db, context.experimentId, context.baseCommit, fitness.higherIsBetter),
    topPrograms: top,
    budgetTokens: settings.promptMaxTokens,
  };
}

/** The archive's fitness settings, which the prompt uses to describe scores. */
export interface FitnessSettings {
  readonly fitnessMetric: string;
  readonly fitnessHigherIsBetter: boolean;
}

const DEFAULT_FITNESS: FitnessSettings = { fitnessMetric: 'combined_score', fitnessHigherIsBetter: true };

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

function fence(text: string, lang: string): string {
  const f = fenceFor(text);
  return `${f}${lang}\n${text}${text.endsWith('\n') ? '' : '\n'}${f}`;
}

/** The evaluator's feedback on the parent: its summary and the end of its output. */
export function formatParentFeedback(feedback: CommitFeedback | undefined): string[] {
  if (!feedback) return [];
  const items: string[] = [];
  if (feedback.summary.trim() !== '') items.push(`Evaluator summary: ${feedback.summary.trim()}`);
  if (feedback.outputTail && feedback.outputTail.trim() !== '') items.push(`The end of the evaluator's output:\n${fence(feedback.outputTail.trim(), 'text')}`);
  return items;
}

function score(value: number | null, fitness: PromptMaterial['fitness']): string {
  return value === null ? `no ${fitness.metric}` : `${fitness.metric} ${value}`;
}

/** One line of verdict and the feedback of each attempt from this parent, newest first. */
export function formatAttempts(material: Pick<PromptMaterial, 'attempts' | 'parentMetrics' | 'fitness'>): string[] {
  const { fitness } = material;
  const parent = material.parentMetrics.find((m) => m.name === fitness.metric)?.value;
  return material.attempts.map((attempt) => {
    const lines: string[] = [];
    const title = attempt.message?.trim().split('\n')[0] ?? '';
    if (attempt.status === 'failed') {
      lines.push(`- job ${attempt.jobId.slice(0, 8)} FAILED${title ? ` (${title})` : ''}: ${clip((attempt.lastError ?? 'failed without a message').trim(), FAILURE_CHARS)}`);
    } else {
      let verdict = '';
      if (attempt.fitness !== null && parent !== undefined) {
        const delta = fitness.higherIsBetter ? attempt.fitness - parent : parent - attempt.fitness;
        verdict = delta > 0 ? `better than the parent by ${Math.abs(attempt.fitness - parent).toPrecision(4)}` : delta < 0 ? `WORSE than the parent by ${Math.abs(attempt.fitness - parent).toPrecision(4)}` : 'no better than the parent';
      }
      lines.push(`- job ${attempt.jobId.slice(0, 8)} scored ${score(attempt.fitness, fitness)}${verdict ? `, ${verdict}` : ''}${title ? `: ${title}` : ''}`);
      if (attempt.ingestionReason && attempt.ingestionStatus === 'rejected') lines.push(`  archive: not kept (${clip(attempt.ingestionReason, 300)})`);
    }
    if (attempt.summary && attempt.summary.trim() !== '') lines.push(`  evaluator summary: ${clip(attempt.summary.trim(), FAILURE_CHARS)}`);
    if (attempt.outputTail && attempt.outputTail.trim() !== '') lines.push(`  end of evaluator output:\n${attempt.outputTail.trim().split('\n').map((l) => `    ${l}`).join('\n')}`);
    return lines.join('\n');
  });
}

/** The parent's cell and behaviour descriptor on each island where it is an elite. */
export function formatPlacements(placements: readonly ArchivePlacement[]): string[] {
  return placements.map((p) =>
    `- island ${p.island}: cell [${p.cell.join(', ')}], descriptor [${p.descriptor.map((x) => x.toFixed(3)).join(', ')}]; ` +
    `${p.better === 0 ? 'the best' : `${p.better} better`} of ${p.islandElites} elites on the island`);
}

export function formatTopPrograms(programs: readonly TopProgramMaterial[], fitness: PromptMaterial['fitness']): string[] {
  return programs.map((program, i) => {
    const parts = [`## Top program ${i + 1}: commit ${program.commit.slice(0, 12)}, ${fitness.metric} ${program.fitness}`];
    if (program.summary.trim() !== '') parts.push(program.summary.trim());
    if (program.metrics.length > 0) parts.push(`Metrics:\n${formatMetrics(program.metrics)}`);
    if (program.diff === undefined) parts.push('(its diff is not available on this worker)');
    else if (program.diff.trim() === '') parts.push('(no difference in the evolvable code)');
    else parts.push(`Its diff from the parent:\n${fence(program.diff, 'diff')}`);
    return parts.join('\n\n');
  });
}

function inspirationItems(inspirations: readonly InspirationMaterial[]): string[] {
  return inspirations.map((insp, i) => {
    const parts = [`## Inspiration ${i + 1}: commit ${insp.commit.slice(0, 12)}`];
    if (insp.summary.trim() !== '') parts.push(insp.summary.trim());
    parts.push(`Metrics:\n${formatMetrics(insp.metrics)}`);
    if (insp.diff === undefined) parts.push('(its diff is not available on this worker)');
    else if (insp.diff.trim() === '') parts.push('(no difference in the evolvable code)');
    else parts.push(fence(insp.diff, 'diff'));
    return parts.join('\n\n');
  });
}

/** Values for `{{name}}` placeholders shared by every template. */
export function templateValues(material: PromptMaterial, options: { inline: boolean; plan?: string }): Record<string, string> {
  const fixed = {
    job_id: material.jobId,
    goal: material.goal,
    constraints: material.constraints ?? '(none given)',
    acceptance_criteria: material.acceptanceCriteria ?? '(none given; the evaluator\'s metrics decide)',
    parent_commit: material.parentCommit,
    code: formatCode(material.evolvable, options.inline),
    parent_metrics: formatMetrics(material.parentMetrics),
    plan: options.plan?.trim() || '(no plan: decide the change yourself)',
  };
  const fixedChars = Object.values(fixed).reduce((sum, value) => sum + value.length, 0) + TEMPLATE_OVERHEAD_CHARS;
  // In priority order: what the evaluator said about the parent, what was tried from it, where it
  // sits, the best of the archive, then neighbours.
  const sections: Section[] = [
    { name: 'parent_feedback', items: formatParentFeedback(material.parentFeedback), empty: '(the evaluator gave no feedback on the parent)' },
    { name: 'attempts', items: formatAttempts(material), empty: '(none yet: this is the first attempt from this parent)', separator: '\n' },
    { name: 'parent_cell', items: formatPlacements(material.placements), empty: '(the parent is not an elite of the archive)', separator: '\n' },
    { name: 'top_programs', items: formatTopPrograms(material.topPrograms, material.fitness), empty: '(none besides the parent)' },
    { name: 'inspirations', items: inspirationItems(material.inspirations), empty: '(none)' },
    { name: 'failures', items: material.failures.map((f) => `- job ${f.id}: ${clip((f.lastError ?? 'failed without a message').trim(), FAILURE_CHARS)}`), empty: '(none)', separator: '\n' },
  ];
  const fitted = fitSections(sections, material.budgetTokens * CHARS_PER_TOKEN - fixedChars);
  return { ...fixed, ...Object.fromEntries([...fitted].map(([name, section]) => [name, section.text])) };
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
