/**
 * Fits the optional parts of a prompt into a token budget by priority. The parts every prompt needs
 * (goal, constraints, the code) are paid for first; what is left goes to the optional sections in
 * priority order (the parent's own feedback before the attempts from it, before the archive's top
 * programs, before inspirations). Each section is a list of items, most important first: items are
 * taken while they fit, the first that does not is cut short when enough room is left, and the
 * rest are named as left out, so the model knows something was there.
 *
 * Tokens are estimated at four characters each, as the chat client does for servers that report
 * no usage; the budget is a bound on the prompt, not an exact count.
 */

export const CHARS_PER_TOKEN = 4;
/** Below this many characters a cut item says nothing useful; it is left out instead. */
const MIN_CUT_CHARS = 300;

export interface Section {
  readonly name: string;
  /** Rendered items, most important first. */
  readonly items: readonly string[];
  /** What the section says when it has no item at all. */
  readonly empty: string;
  /** Joins the items. */
  readonly separator?: string;
}

export interface FittedSection {
  readonly text: string;
  readonly included: number;
  readonly leftOut: number;
}

export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  const note = `\n… (${text.length - max} more characters cut to fit the prompt budget)`;
  return `${text.slice(0, Math.max(0, max - note.length))}${note}`;
}

/** Every section fitted into `budgetChars`, in the order given (which is the priority order). */
export function fitSections(sections: readonly Section[], budgetChars: number): Map<string, FittedSection> {
  const fitted = new Map<string, FittedSection>();
  let remaining = Math.max(0, budgetChars);
  for (const section of sections) {
    const separator = section.separator ?? '\n\n';
    if (section.items.length === 0) {
      fitted.set(section.name, { text: section.empty, included: 0, leftOut: 0 });
      continue;
    }
    const taken: string[] = [];
    for (const item of section.items) {
      const cost = item.length + (taken.length > 0 ? separator.length : 0);
      if (cost <= remaining) {
        taken.push(item);
        remaining -= cost;
        continue;
      }
      if (remaining - separator.length >= MIN_CUT_CHARS) {
        const cut = cutText(item, remaining - separator.length);
        taken.push(cut);
        remaining -= cut.length + separator.length;
      }
      break;
    }
    const leftOut = section.items.length - taken.length;
    const note = leftOut > 0 ? `(${leftOut} more left out to fit WORKER_AGENT_PROMPT_MAX_TOKENS)` : '';
    const text = taken.length === 0 ? note : [...taken, ...(note ? [note] : [])].join(separator);
    remaining = Math.max(0, remaining - note.length);
    fitted.set(section.name, { text, included: taken.length, leftOut });
  }
  return fitted;
}
