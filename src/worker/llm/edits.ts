import path from 'node:path';

/**
 * Reading a model's reply into file edits, and applying them to text.
 *
 * Diff mode, one block per change, the file's path on the line before:
 *
 *     pack.js
 *     <<<<<<< SEARCH
 *     const n = 26;
 *     =======
 *     const n = 26; // tuned
 *     >>>>>>> REPLACE
 *
 * Full mode: the path on a line, then the whole new file in a fenced block.
 *
 * A SEARCH text is found exactly first; failing that line by line ignoring trailing whitespace,
 * then ignoring indentation (the replacement is re-indented by the same amount) and blank lines
 * at its ends. It must match one place only: an ambiguous edit is sent back, never guessed.
 */

export interface SearchReplaceEdit {
  readonly path: string;
  readonly search: string;
  readonly replace: string;
  /** 1-based, for messages. */
  readonly index: number;
}

export interface FullFileEdit {
  readonly path: string;
  readonly content: string;
}

export interface ParsedReply<E> {
  readonly edits: E[];
  /** Problems with the reply's form, each a sentence the model can act on. */
  readonly problems: string[];
  readonly summary: string | undefined;
}

const SEARCH_LINE = /^\s*<{5,9}\s*SEARCH\s*$/;
const DIVIDER_LINE = /^\s*={5,9}\s*$/;
const REPLACE_LINE = /^\s*>{5,9}\s*REPLACE\s*$/;
const FENCE_LINE = /^\s*(`{3,}|~{3,})(.*)$/;

/** `SUMMARY: …` on a line of its own, or `<summary>…</summary>`. */
export function replySummary(reply: string): string | undefined {
  const tagged = /<summary>([\s\S]*?)<\/summary>/i.exec(reply);
  if (tagged && tagged[1].trim() !== '') return tagged[1].trim();
  const line = /^\s*(?:\*\*)?summary(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.+)$/im.exec(reply);
  return line && line[1].trim() !== '' ? line[1].trim() : undefined;
}

/** The path a model wrote on a line: without markdown decoration or a `File:` label. */
export function cleanPathLine(line: string): string | undefined {
  let text = line.trim();
  text = text.replace(/^#+\s*/, '').replace(/^[-*]\s+/, '');
  text = text.replace(/^(?:\*\*|__)?(?:file(?:name)?|path)\s*:\s*(?:\*\*|__)?\s*/i, '');
  text = text.replace(/^[*_`'"]+|[*_`'":]+$/g, '').trim();
  if (text === '' || /\s/.test(text) || text.length > 300) return undefined;
  if (SEARCH_LINE.test(text) || DIVIDER_LINE.test(text) || REPLACE_LINE.test(text)) return undefined;
  return text;
}

/** A repository-relative path, or a reason it is not one. */
export function normalizeRepoPath(raw: string): { path: string } | { problem: string } {
  const cleaned = raw.replace(/\\/g, '/').replace(/^\.\//, '');
  if (cleaned === '' || path.posix.isAbsolute(cleaned)) return { problem: `${JSON.stringify(raw)} is not a path relative to the repository root` };
  const normal = path.posix.normalize(cleaned);
  if (normal === '..' || normal.startsWith('../') || normal === '.git' || normal.startsWith('.git/')) {
    return { problem: `${JSON.stringify(raw)} is outside the repository` };
  }
  return { path: normal };
}

/** The nearest line above `index` that names a path, skipping blanks and fences. */
function pathAbove(lines: readonly string[], index: number, floor: number): string | undefined {
  for (let i = index - 1; i >= floor; i--) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const fence = FENCE_LINE.exec(line);
    if (fence) {
      // ```js pack.js or ```pack.js: an info string naming a file.
      const words = fence[2].trim().split(/\s+/).filter((w) => w !== '');
      const named = words.reverse().find((w) => w.includes('.') || w.includes('/'));
      if (named) return cleanPathLine(named);
      continue;
    }
    return cleanPathLine(line);
  }
  return undefined;
}

/**
 * Every SEARCH/REPLACE block in a reply. A block without a path line takes the previous block's
 * path, or `defaultPath` (the only evolvable file) for the first.
 */
export function parseSearchReplace(reply: string, defaultPath?: string): ParsedReply<SearchReplaceEdit> {
  const lines = reply.replace(/\r\n/g, '\n').split('\n');
  const edits: SearchReplaceEdit[] = [];
  const problems: string[] = [];
  let previousPath: string | undefined;
  let floor = 0;
  let i = 0;
  while (i < lines.length) {
    if (!SEARCH_LINE.test(lines[i])) {
      i++;
      continue;
    }
    const index = edits.length + problems.length + 1;
    const named = pathAbove(lines, i, floor);
    const filePath = named ?? previousPath ?? defaultPath;
    const search: string[] = [];
    let j = i + 1;
    while (j < lines.length && !DIVIDER_LINE.test(lines[j]) && !SEARCH_LINE.test(lines[j])) search.push(lines[j++]);
    if (j >= lines.length || !DIVIDER_LINE.test(lines[j])) {
      problems.push(`block ${index}: "<<<<<<< SEARCH" has no "=======" line after it`);
      i = j;
      continue;
    }
    const replace: string[] = [];
    let k = j + 1;
    while (k < lines.length && !REPLACE_LINE.test(lines[k]) && !SEARCH_LINE.test(lines[k])) replace.push(lines[k++]);
    if (k >= lines.length || !REPLACE_LINE.test(lines[k])) {
      problems.push(`block ${index}: "=======" has no ">>>>>>> REPLACE" line after it`);
      i = k;
      continue;
    }
    if (filePath === undefined) {
      problems.push(`block ${index}: no file path on the line before "<<<<<<< SEARCH"`);
    } else {
      edits.push({ path: filePath, search: joinLines(search), replace: joinLines(replace), index });
      previousPath = filePath;
    }
    floor = k + 1;
    i = k + 1;
  }
  return { edits, problems, summary: replySummary(reply) };
}

function joinLines(lines: readonly string[]): string {
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/**
 * Whole files in fenced blocks, each with its path on the line before (or in the fence's info
 * string). A single block without a path goes to `defaultPath`.
 */
export function parseFullFiles(reply: string, defaultPath?: string): ParsedReply<FullFileEdit> {
  const lines = reply.replace(/\r\n/g, '\n').split('\n');
  const edits: FullFileEdit[] = [];
  const problems: string[] = [];
  let i = 0;
  let blocks = 0;
  while (i < lines.length) {
    const open = FENCE_LINE.exec(lines[i]);
    if (!open) {
      i++;
      continue;
    }
    blocks++;
    const fence = open[1];
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !(lines[j].trim().startsWith(fence[0].repeat(fence.length)) && lines[j].trim().replace(/[`~]/g, '') === '')) body.push(lines[j++]);
    if (j >= lines.length) {
      problems.push(`block ${blocks}: the fenced block is not closed`);
      break;
    }
    const words = open[2].trim().split(/\s+/).filter((w) => w !== '');
    const fromInfo = words.reverse().find((w) => w.includes('.') || w.includes('/'));
    const named = (fromInfo ? cleanPathLine(fromInfo) : undefined) ?? pathAbove(lines, i, 0);
    const filePath = named ?? defaultPath;
    if (filePath === undefined) problems.push(`block ${blocks}: no file path on the line before the fenced block`);
    else edits.push({ path: filePath, content: joinLines(body) });
    i = j + 1;
  }
  return { edits, problems, summary: replySummary(reply) };
}

export type MatchKind = 'exact' | 'trailing-whitespace' | 'indentation';

export type ApplyResult =
  | { readonly ok: true; readonly content: string; readonly match: MatchKind | 'create' }
  | { readonly ok: false; readonly reason: string };

function leadingWhitespace(line: string): string {
  return /^[ \t]*/.exec(line)![0];
}

function countOccurrences(haystack: string, needle: string): number[] {
  const at: number[] = [];
  let from = 0;
  for (;;) {
    const index = haystack.indexOf(needle, from);
    if (index < 0) return at;
    at.push(index);
    from = index + 1;
  }
}

/** Lines of `text` with their end offsets, so a line range maps back to characters. */
function splitLines(text: string): { lines: string[]; starts: number[] } {
  const lines: string[] = [];
  const starts: number[] = [];
  let start = 0;
  for (;;) {
    const end = text.indexOf('\n', start);
    starts.push(start);
    if (end < 0) {
      lines.push(text.slice(start));
      break;
    }
    lines.push(text.slice(start, end));
    start = end + 1;
  }
  // A trailing newline leaves an empty last "line" that is not one.
  if (lines.length > 1 && lines[lines.length - 1] === '' && text.endsWith('\n')) {
    lines.pop();
    starts.pop();
  }
  return { lines, starts };
}

function trimBlankEnds(lines: string[]): string[] {
  let a = 0;
  let b = lines.length;
  while (a < b && lines[a].trim() === '') a++;
  while (b > a && lines[b - 1].trim() === '') b--;
  return lines.slice(a, b);
}

/** Start line indexes where `needle` matches `hay` under `same`. */
function lineMatches(hay: readonly string[], needle: readonly string[], same: (a: string, b: string) => boolean): number[] {
  const found: number[] = [];
  if (needle.length === 0) return found;
  for (let i = 0; i + needle.length <= hay.length; i++) {
    let all = true;
    for (let k = 0; k < needle.length && all; k++) all = same(hay[i + k], needle[k]);
    if (all) found.push(i);
  }
  return found;
}

/** Moves `lines` by the indentation difference between where the search was written and found. */
function reindent(lines: readonly string[], written: string, found: string): string[] {
  if (written === found) return [...lines];
  if (found.startsWith(written)) {
    const add = found.slice(written.length);
    return lines.map((line) => (line.trim() === '' ? line : add + line));
  }
  if (written.startsWith(found)) {
    const remove = written.slice(found.length);
    return lines.map((line) => (line.startsWith(remove) ? line.slice(remove.length) : line));
  }
  return [...lines];
}

function ambiguous(count: number): ApplyResult {
  return { ok: false, reason: `the SEARCH text matches ${count} places; include more surrounding lines so it matches one` };
}

/**
 * Applies one SEARCH/REPLACE to `content` (undefined: the file does not exist, and only an empty
 * SEARCH creates it).
 */
export function applySearchReplace(content: string | undefined, search: string, replace: string): ApplyResult {
  if (search.trim() === '') {
    if (content === undefined || content.trim() === '') return { ok: true, content: replace, match: 'create' };
    return { ok: false, reason: 'the SEARCH text is empty but the file already exists; quote the lines to change' };
  }
  if (content === undefined) return { ok: false, reason: 'the file does not exist (an empty SEARCH creates a new file)' };

  const exact = countOccurrences(content, search);
  if (exact.length === 1) return { ok: true, content: content.slice(0, exact[0]) + replace + content.slice(exact[0] + search.length), match: 'exact' };
  if (exact.length > 1) return ambiguous(exact.length);

  const { lines, starts } = splitLines(content);
  const searchLines = trimBlankEnds(splitLines(search).lines);
  if (searchLines.length === 0) return { ok: false, reason: 'the SEARCH text is only blank lines' };
  const replaceLines = splitLines(replace).lines;
  const replaceBody = replace === '' ? [] : replaceLines;

  const passes: Array<[MatchKind, (a: string, b: string) => boolean]> = [
    ['trailing-whitespace', (a, b) => a.trimEnd() === b.trimEnd()],
    ['indentation', (a, b) => a.trim() === b.trim()],
  ];
  for (const [kind, same] of passes) {
    const found = lineMatches(lines, searchLines, same);
    if (found.length > 1) return ambiguous(found.length);
    if (found.length === 0) continue;
    const first = found[0];
    const last = first + searchLines.length - 1;
    const anchor = searchLines.findIndex((line) => line.trim() !== '');
    const body = kind === 'indentation'
      ? reindent(replaceBody, leadingWhitespace(searchLines[anchor]), leadingWhitespace(lines[first + anchor]))
      : replaceBody;
    const start = starts[first];
    const endOfLast = starts[last] + lines[last].length;
    const end = content[endOfLast] === '\n' ? endOfLast + 1 : endOfLast;
    const tail = content.slice(end);
    const inserted = body.length === 0 ? '' : `${body.join('\n')}${end > endOfLast || tail !== '' ? '\n' : ''}`;
    return { ok: true, content: content.slice(0, start) + inserted + tail, match: kind };
  }
  return { ok: false, reason: `the SEARCH text was not found in the file (not even ignoring whitespace): ${closestMismatch(lines, searchLines)}; copy the lines exactly as they are in the current file` };
}

function quoteLine(line: string): string {
  const trimmed = line.trim();
  return JSON.stringify(trimmed.length > 120 ? `${trimmed.slice(0, 120)}…` : trimmed);
}

/** Bigram (Dice) similarity of two trimmed lines, in [0, 1]. */
function similarity(a: string, b: string): number {
  const x = a.trim();
  const y = b.trim();
  if (x === y) return 1;
  if (x.length < 2 || y.length < 2) return 0;
  const grams = new Map<string, number>();
  for (let i = 0; i + 1 < x.length; i++) grams.set(x.slice(i, i + 2), (grams.get(x.slice(i, i + 2)) ?? 0) + 1);
  let shared = 0;
  for (let i = 0; i + 1 < y.length; i++) {
    const gram = y.slice(i, i + 2);
    const left = grams.get(gram) ?? 0;
    if (left > 0) {
      shared++;
      grams.set(gram, left - 1);
    }
  }
  return (2 * shared) / (x.length - 1 + y.length - 1);
}

/**
 * Where the SEARCH text comes closest to the file (the start line where its lines are most alike
 * the file's) and its first line that differs there, so the model sees exactly what it misquoted
 * rather than only that it did.
 */
export function closestMismatch(lines: readonly string[], searchLines: readonly string[]): string {
  let best = -1;
  let bestScore = 0;
  for (let i = 0; i < lines.length; i++) {
    let score = 0;
    for (let k = 0; k < searchLines.length && i + k < lines.length; k++) if (searchLines[k].trim() !== '') score += similarity(lines[i + k], searchLines[k]);
    if (score > bestScore) {
      best = i;
      bestScore = score;
    }
  }
  const firstLine = searchLines.find((line) => line.trim() !== '') ?? '';
  if (best < 0 || bestScore < 0.3) return `nothing in the file resembles it (it starts with ${quoteLine(firstLine)})`;
  const k = searchLines.findIndex((line, index) => best + index >= lines.length || lines[best + index].trim() !== line.trim());
  const where = `it comes closest at line ${best + 1}`;
  if (best + k >= lines.length) return `${where}, but its line ${k + 1} ${quoteLine(searchLines[k])} runs past the end of the file`;
  return `${where}, but its line ${k + 1} is ${quoteLine(searchLines[k])} where the file has ${quoteLine(lines[best + k])} (line ${best + k + 1})`;
}
