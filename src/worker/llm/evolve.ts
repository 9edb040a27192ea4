import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { gitAt } from '../../shared/git.ts';

/**
 * What a model may change. With `WORKER_EVOLVE_PATHS` set, the tracked files matching its globs
 * (and new files matching them); without it, tracked files that carry EVOLVE-BLOCK markers. In a
 * file with markers only the lines strictly between an `EVOLVE-BLOCK-START` line and the next
 * `EVOLVE-BLOCK-END` line may change; the markers stay.
 */

export const BLOCK_START = 'EVOLVE-BLOCK-START';
export const BLOCK_END = 'EVOLVE-BLOCK-END';
const MAX_FILE_BYTES = 512 * 1024;

export interface EvolvableFile {
  readonly path: string;
  readonly content: string;
  /** True when the file has EVOLVE-BLOCK markers and only their regions may change. */
  readonly marked: boolean;
}

export interface EvolvableSet {
  readonly files: readonly EvolvableFile[];
  readonly globs: readonly string[];
}

export function hasMarkers(content: string): boolean {
  return content.includes(BLOCK_START);
}

export function matchesAny(file: string, globs: readonly string[]): boolean {
  return globs.some((glob) => path.posix.matchesGlob(file, glob));
}

async function trackedFiles(directory: string): Promise<string[]> {
  const out = await gitAt(directory).raw(['ls-files', '-z']);
  return out.split('\0').filter((name) => name !== '');
}

async function readText(file: string): Promise<string | undefined> {
  const info = await stat(file).catch(() => undefined);
  if (!info?.isFile() || info.size > MAX_FILE_BYTES) return undefined;
  const buffer = await readFile(file);
  if (buffer.includes(0)) return undefined;
  return buffer.toString('utf8');
}

/** The evolvable files of a worktree as checked out, in path order. */
export async function collectEvolvable(directory: string, globs: readonly string[]): Promise<EvolvableSet> {
  const files: EvolvableFile[] = [];
  for (const name of (await trackedFiles(directory)).sort()) {
    if (globs.length > 0 && !matchesAny(name, globs)) continue;
    const content = await readText(path.join(directory, name));
    if (content === undefined) continue;
    const marked = hasMarkers(content);
    if (globs.length === 0 && !marked) continue;
    files.push({ path: name, content, marked });
  }
  return { files, globs };
}

/**
 * The file with every evolvable region emptied: two versions with the same skeleton differ only
 * inside the regions. An unclosed region runs to the end of the file.
 */
export function skeleton(content: string): string {
  const kept: string[] = [];
  let inside = false;
  for (const line of content.replace(/\r\n/g, '\n').split('\n')) {
    if (line.includes(BLOCK_START)) {
      kept.push(line.trimEnd());
      inside = true;
    } else if (line.includes(BLOCK_END)) {
      kept.push(line.trimEnd());
      inside = false;
    } else if (!inside) {
      kept.push(line.trimEnd());
    }
  }
  return kept.join('\n').trimEnd();
}

/** Undefined when `after` changes only what `before`'s markers allow; else the reason. */
export function regionViolation(before: string, after: string): string | undefined {
  if (!hasMarkers(before)) return undefined;
  if (skeleton(before) === skeleton(after)) return undefined;
  return `it changes lines outside the ${BLOCK_START} / ${BLOCK_END} regions (or the markers themselves); change only the lines between the markers`;
}

/** Whether the model may write `file`: an evolvable file, or a new one matching the globs. */
export function writable(set: EvolvableSet, file: string, directory: string): { ok: true; existing: EvolvableFile | undefined } | { ok: false; reason: string } {
  const existing = set.files.find((f) => f.path === file);
  if (existing) return { ok: true, existing };
  if (set.globs.length > 0 && matchesAny(file, set.globs)) {
    if (existsSync(path.join(directory, file))) return { ok: false, reason: `${file} is not a text file Loreley can edit` };
    return { ok: true, existing: undefined };
  }
  const allowed = set.globs.length > 0 ? `files matching ${set.globs.join(', ')}` : `the ${BLOCK_START} regions of ${set.files.map((f) => f.path).join(', ')}`;
  return { ok: false, reason: `${file} is not evolvable; only ${allowed} may change` };
}
