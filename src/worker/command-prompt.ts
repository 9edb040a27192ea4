import type { JobContext } from './agent.ts';

/** The plain prompt a command agent gets: the goal and where things are. */
export function basicPrompt(context: JobContext): string {
  const lines = [
    `# Evolution job ${context.jobId}`,
    '',
    context.goal ? `Goal: ${context.goal}` : 'Goal: improve the program so the evaluator scores it higher.',
    '',
    `Parent commit: ${context.baseCommit}`,
  ];
  if (context.inspirations.length > 0) lines.push(`Inspirations: ${context.inspirations.join(', ')}`);
  lines.push('', 'Edit files in the current directory. Do not commit: the worker commits your changes.');
  return `${lines.join('\n')}\n`;
}
