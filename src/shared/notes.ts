import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { gitAt, gitEnvironment, GitError, isFullHash, readObjects, runGitWithInput, SAFE_CONFIG } from './git.ts';

/**
 * Git notes under `refs/notes/loreley`: the experiment's record travelling with its commits, so a
 * lost database can be rebuilt from the remote alone (`loreley rebuild`).
 *
 * A note is text of JSON lines, one self-contained record each. Line-oriented content is what lets
 * several writers merge without a conflict: `git notes merge -s cat_sort_uniq` concatenates two
 * versions of a note, sorts the lines and drops duplicates; readers never depend on line order.
 *
 * Every operation is a bounded number of git processes whatever the number of notes: writing goes
 * through one `git fast-import`, reading through `git notes list` and one `git cat-file --batch`.
 */

export const NOTES_REF = 'refs/notes/loreley';
/** Where a fetch puts the remote's notes before they are merged into ours. */
const REMOTE_NOTES_REF = 'refs/notes/loreley-remote';
const IDENTITY = ['-c', 'user.name=Loreley', '-c', 'user.email=loreley@localhost'];
/** Non-fast-forward pushes (another writer pushed first) are merged and tried again this often. */
const PUSH_ATTEMPTS = 5;

/** Fan-out depths a notes tree may use (git adds a level per 256× more notes): up to 4 billion notes. */
const FANOUTS = [1, 0, 2, 3];

/** A commit's note path at a fan-out depth: `ab/cdef…` at depth 1. */
function notePath(commit: string, depth: number): string {
  let path = '';
  for (let level = 0; level < depth; level += 1) path += `${commit.slice(level * 2, level * 2 + 2)}/`;
  return path + commit.slice(depth * 2);
}

/**
 * The note text of each annotated commit, from one listing and one batched read; or of the
 * commits in `only`, looked up by path in one batched read (no listing: its cost grows with every
 * note the experiment ever wrote, and the scheduler reads the notes of a few commits every tick).
 */
export async function readNotes(directory: string, only?: ReadonlySet<string>): Promise<Map<string, string>> {
  if (only) {
    const commits = [...only].filter((commit) => isFullHash(commit));
    const specs = commits.flatMap((commit) => FANOUTS.map((depth) => `${NOTES_REF}:${notePath(commit, depth)}`));
    const found = await readObjects(directory, specs);
    const notes = new Map<string, string>();
    for (const commit of commits) {
      const hits = FANOUTS.map((depth) => found.get(`${NOTES_REF}:${notePath(commit, depth)}`)).filter((content) => content !== undefined);
      // One path per note is what git and fast-import write; a tree with the same commit at two
      // depths is left to git's own reading.
      if (hits.length > 1) return readNotesListed(directory, only);
      if (hits.length === 1) notes.set(commit, hits[0].toString('utf8'));
    }
    return notes;
  }
  return readNotesListed(directory);
}

async function readNotesListed(directory: string, only?: ReadonlySet<string>): Promise<Map<string, string>> {
  const listing = await gitAt(directory).raw(['notes', `--ref=${NOTES_REF}`, 'list']).catch((error: unknown) => {
    // No notes ref yet: nothing written.
    if (error instanceof GitError) return '';
    throw error;
  });
  const pairs: Array<{ blob: string; commit: string }> = [];
  for (const line of listing.split('\n')) {
    const [blob, commit] = line.trim().split(/\s+/);
    if (blob && commit && (!only || only.has(commit))) pairs.push({ blob, commit });
  }
  const blobs = await readObjects(directory, pairs.map((pair) => pair.blob));
  const notes = new Map<string, string>();
  for (const { blob, commit } of pairs) {
    const content = blobs.get(blob);
    if (content !== undefined) notes.set(commit, content.toString('utf8'));
  }
  return notes;
}

/** The lines of a note: non-empty, trimmed. */
export function noteLines(text: string | undefined): string[] {
  if (!text) return [];
  return text.split('\n').map((line) => line.trim()).filter((line) => line !== '');
}

/**
 * Writes notes (commit → full note text, replacing what the commit had) as one notes commit
 * through one `git fast-import`. The caller composes the text, e.g. existing lines plus new ones.
 */
export async function writeNotes(directory: string, notes: ReadonlyMap<string, string>, message: string): Promise<void> {
  if (notes.size === 0) return;
  const parent = await resolveRef(directory, NOTES_REF);
  const chunks: Buffer[] = [];
  const data = (text: string) => {
    const bytes = Buffer.from(text, 'utf8');
    chunks.push(Buffer.from(`data ${bytes.length}\n`), bytes, Buffer.from('\n'));
  };
  chunks.push(Buffer.from(`commit ${NOTES_REF}\ncommitter Loreley <loreley@localhost> ${Math.floor(Date.now() / 1000)} +0000\n`));
  data(message);
  if (parent) chunks.push(Buffer.from(`from ${parent}\n`));
  for (const [commit, text] of notes) {
    chunks.push(Buffer.from(`N inline ${commit}\n`));
    data(text.endsWith('\n') ? text : `${text}\n`);
  }
  chunks.push(Buffer.from('done\n'));
  await runGitWithInput(directory, ['fast-import', '--quiet', '--done'], Buffer.concat(chunks));
}

/**
 * Brings the remote's notes in: fetched to a side ref, then merged into ours with
 * `cat_sort_uniq` (a union of lines), or taken as they are when we have none. Returns false when
 * the remote has no notes yet.
 */
export async function fetchNotes(directory: string, remote = 'origin'): Promise<boolean> {
  const git = gitAt(directory);
  try {
    await git.raw(['fetch', '--quiet', '--no-tags', remote, `+${NOTES_REF}:${REMOTE_NOTES_REF}`]);
  } catch (error) {
    if (error instanceof GitError && /couldn't find remote ref|could not find remote ref/i.test(error.message)) return false;
    throw error;
  }
  const remoteTip = await resolveRef(directory, REMOTE_NOTES_REF);
  if (!remoteTip) return false;
  const ours = await resolveRef(directory, NOTES_REF);
  if (!ours) {
    await git.raw(['update-ref', NOTES_REF, remoteTip]);
  } else if (ours !== remoteTip) {
    await git.raw([...IDENTITY, 'notes', `--ref=${NOTES_REF}`, 'merge', '--quiet', '--strategy=cat_sort_uniq', REMOTE_NOTES_REF]);
  }
  return true;
}

/**
 * Pushes our notes. Another writer may have pushed meanwhile (non-fast-forward): its notes are
 * fetched and merged, and the push tried again, a few times with a short pause.
 */
export async function pushNotes(directory: string, remote = 'origin'): Promise<void> {
  if (!(await resolveRef(directory, NOTES_REF))) return;
  for (let attempt = 1; ; attempt++) {
    try {
      await gitAt(directory).raw(['push', '--quiet', '--no-verify', remote, `${NOTES_REF}:${NOTES_REF}`]);
      return;
    } catch (error) {
      // git's message tail varies (a rejection ends in hints); any failure is retried after a
      // fetch and merge, and a remote that cannot be reached fails that fetch.
      if (!(error instanceof GitError) || attempt >= PUSH_ATTEMPTS) throw error;
      await sleep(50 * attempt + Math.floor(Math.random() * 50));
      await fetchNotes(directory, remote);
    }
  }
}

/** Which of `commits` this repository lacks, from one `git cat-file --batch-check`. */
export async function missingCommits(directory: string, commits: readonly string[]): Promise<string[]> {
  const unique = [...new Set(commits)];
  if (unique.length === 0) return [];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('git', [...SAFE_CONFIG, 'cat-file', '--batch-check'], { cwd: directory, stdio: ['pipe', 'pipe', 'pipe'], env: gitEnvironment() });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new GitError(`git cat-file --batch-check exited with ${code}`))));
    child.stdin.end(`${unique.join('\n')}\n`);
  });
  const present = new Set(out.split('\n').filter((line) => / commit \d+$/.test(line)).map((line) => line.split(' ')[0]));
  return unique.filter((commit) => !present.has(commit));
}

async function resolveRef(directory: string, ref: string): Promise<string | undefined> {
  try {
    const out = (await gitAt(directory).raw(['rev-parse', '--verify', '--quiet', ref])).trim();
    return out === '' ? undefined : out;
  } catch {
    return undefined;
  }
}
