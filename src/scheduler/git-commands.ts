import { spawn } from 'node:child_process';
import { gitAt } from '../shared/git.ts';

/**
 * The git commands only the scheduler runs, beyond src/shared/git.ts: it reads tree listings, raw
 * diffs and batched blobs for the repository-state embedding, and writes (fetches from a worker
 * clone, moves the best branch).
 */

export const NULL_BLOB = '0000000000000000000000000000000000000000';

export interface TreeEntry {
  readonly path: string;
  readonly blob: string;
  readonly mode: string;
  readonly size: number;
}

/** Every regular file (not symlinks or submodules) in a commit, with blob hash and size. */
export async function listTree(directory: string, commit: string): Promise<TreeEntry[]> {
  const out = await gitAt(directory).raw(['ls-tree', '-r', '-l', '-z', '--full-tree', commit]);
  const entries: TreeEntry[] = [];
  for (const record of out.split('\0')) {
    if (record === '') continue;
    const tab = record.indexOf('\t');
    const [mode, type, blob, size] = record.slice(0, tab).trim().split(/\s+/);
    if (type !== 'blob' || (mode !== '100644' && mode !== '100755')) continue;
    entries.push({ path: record.slice(tab + 1), blob, mode, size: Number(size) });
  }
  return entries;
}

export interface DiffEntry {
  readonly path: string;
  readonly oldBlob: string;
  readonly newBlob: string;
  readonly oldMode: string;
  readonly newMode: string;
}

/** Changed files between two commits; renames appear as a deletion plus an addition. */
export async function diffTree(directory: string, from: string, to: string): Promise<DiffEntry[]> {
  const out = await gitAt(directory).raw(['diff-tree', '-r', '-z', '--no-renames', '--raw', from, to]);
  const parts = out.split('\0');
  const entries: DiffEntry[] = [];
  for (let i = 0; i < parts.length - 1; i += 2) {
    const header = parts[i];
    if (!header.startsWith(':')) {
      i -= 1;
      continue;
    }
    const [oldMode, newMode, oldBlob, newBlob] = header.slice(1).split(' ');
    entries.push({ path: parts[i + 1], oldBlob, newBlob, oldMode, newMode });
  }
  return entries;
}

/** Sizes of blobs by hash, for the size cap on files a diff touches. */
export async function blobSizes(directory: string, blobs: readonly string[]): Promise<Map<string, number>> {
  const unique = [...new Set(blobs)].filter((blob) => blob !== NULL_BLOB);
  if (unique.length === 0) return new Map();
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('git', ['cat-file', '--batch-check'], { cwd: directory, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`git cat-file --batch-check exited with ${code}`))));
    child.stdin.end(`${unique.join('\n')}\n`);
  });
  const sizes = new Map<string, number>();
  for (const line of out.split('\n')) {
    const [hash, type, size] = line.split(' ');
    if (type === 'blob') sizes.set(hash, Number(size));
  }
  return sizes;
}

/** A file's content at a commit, or undefined when the commit has no such file. */
export async function readFileAt(directory: string, commit: string, file: string): Promise<string | undefined> {
  try {
    return await gitAt(directory).raw(['show', `${commit}:${file}`]);
  } catch {
    return undefined;
  }
}

/** Fetches every branch of a local worker clone, for commits that were never pushed to the remote. */
export async function fetchFromClone(directory: string, clone: string): Promise<void> {
  await gitAt(directory).raw(['fetch', '--quiet', '--no-tags', clone, '+refs/heads/*:refs/loreley/worker/*']);
}

/** Points a local branch at a commit (creating or moving it). */
export async function setBranch(directory: string, branch: string, commit: string): Promise<void> {
  await gitAt(directory).raw(['update-ref', `refs/heads/${branch}`, commit]);
}

export async function remoteUrl(directory: string): Promise<string | undefined> {
  try {
    return (await gitAt(directory).raw(['remote', 'get-url', 'origin'])).trim();
  } catch {
    return undefined;
  }
}
