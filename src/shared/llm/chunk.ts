/**
 * Splits a source file into chunks small enough for an embedding model's context, the way the
 * original Loreley's `CodeChunker` does: windows of about `targetLines` lines, each ended early (but
 * not before `minLines`) at the last blank line or boundary-looking line (a keyword such as
 * `function ` or `class `, a line ending in `:`, `{` or `}`, or an unindented line), consecutive
 * windows overlapping by `overlapLines`, at most `maxChunks` per file (the tail past that is left
 * out). Whitespace-only windows are dropped.
 *
 * A line is also cut to `maxLineChars`: a minified file of one huge line must not make a chunk
 * longer than the model accepts.
 */

export interface ChunkSettings {
  readonly targetLines: number;
  readonly minLines: number;
  readonly overlapLines: number;
  readonly maxChunks: number;
}

export const DEFAULT_CHUNK_SETTINGS: ChunkSettings = Object.freeze({ targetLines: 80, minLines: 20, overlapLines: 8, maxChunks: 64 });

export const BOUNDARY_KEYWORDS: readonly string[] = Object.freeze([
  'def ', 'class ', 'async def ', 'fn ', 'function ', 'impl ', 'struct ', 'interface ', 'module ', 'export ',
]);

/** Long enough for any sane source line; a chunk of 80 such lines still fits an 8k-token model. */
const MAX_LINE_CHARS = 400;

export interface Chunk {
  /** 1-based, inclusive. */
  readonly startLine: number;
  readonly endLine: number;
  readonly text: string;
}

function looksLikeBoundary(line: string): boolean {
  const stripped = line.trim();
  const lowered = stripped.toLowerCase();
  if (BOUNDARY_KEYWORDS.some((keyword) => lowered.startsWith(keyword))) return true;
  if (stripped.endsWith(':') || stripped.endsWith('{') || stripped.endsWith('}')) return true;
  return line.length === line.trimStart().length;
}

/** End (exclusive) of the window starting at `start`: the last break point in [start+min, roughEnd]. */
function breakPoint(lines: readonly string[], start: number, roughEnd: number, settings: ChunkSettings): number {
  const minBreak = Math.min(start + settings.minLines, lines.length);
  if (roughEnd <= minBreak) return roughEnd;
  for (let index = roughEnd - 1; index >= minBreak; index--) {
    const line = lines[index];
    if (line.trim() === '' || looksLikeBoundary(line)) return index + 1;
  }
  return roughEnd;
}

export function chunkText(content: string, settings: ChunkSettings = DEFAULT_CHUNK_SETTINGS): Chunk[] {
  const minLines = Math.max(1, settings.minLines);
  const normalized: ChunkSettings = {
    minLines,
    targetLines: Math.max(minLines, settings.targetLines),
    overlapLines: Math.max(0, settings.overlapLines),
    maxChunks: Math.max(1, settings.maxChunks),
  };
  const lines = content.split(/\r?\n/).map((line) => (line.length > MAX_LINE_CHARS ? line.slice(0, MAX_LINE_CHARS) : line));
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const chunks: Chunk[] = [];
  let cursor = 0;
  for (let windows = 0; cursor < lines.length && windows < normalized.maxChunks; windows++) {
    const start = cursor;
    const roughEnd = Math.min(start + normalized.targetLines, lines.length);
    let end = breakPoint(lines, start, roughEnd, normalized);
    if (end <= start) end = roughEnd;
    const text = lines.slice(start, end).join('\n').replace(/^\n+|\n+$/g, '');
    if (text.trim() !== '') chunks.push({ startLine: start + 1, endLine: end, text });
    if (end >= lines.length) cursor = lines.length;
    else {
      const next = end - normalized.overlapLines;
      cursor = next <= start ? end : next;
    }
  }
  return chunks;
}
