import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { gitEnvironment, GitError, SAFE_CONFIG } from '../../shared/git.ts';

/**
 * The scheduler's reads of a clone's objects for the repository-state embedding, through two
 * long-lived git processes per clone: `git cat-file --batch` (contents) and `--batch-check`
 * (sizes). A commit's tree listing, the diff between two commits, its ignore files and its blobs
 * are requests to them, so embedding a commit spawns no process at all: one `ls-tree`, one
 * `diff-tree`, two `show`s and two `cat-file`s per commit (five or six spawns from the ~90 MB
 * scheduler) were most of an incremental embedding's time.
 *
 * Requests are written as they come and answered in order, so concurrent callers share a process.
 * Objects fetched into the clone later are found: git rescans its packs when an object is missing.
 * A process that dies fails the requests it had and is started again on the next one. Idle, the
 * processes hold no reference on the event loop (a finished scheduler or test exits), and after
 * `idleMs` (30 s by default) their stdin is closed and they exit, so processes that make many
 * embedders over their life, or sit idle for hours, do not keep pairs of git processes around.
 */

const IDLE_MS = 30_000;

export const NULL_OID = '0000000000000000000000000000000000000000';

export interface TreeEntry {
  readonly path: string;
  readonly oid: string;
  readonly mode: string;
}

export interface DiffEntry {
  readonly path: string;
  readonly oldBlob: string;
  readonly newBlob: string;
  readonly oldMode: string;
  readonly newMode: string;
}

interface GitObject {
  readonly oid: string;
  readonly type: string;
  readonly size: number;
  readonly content?: Buffer;
}

type Pending = { readonly count: number; readonly results: Array<GitObject | undefined>; resolve(value: Array<GitObject | undefined>): void; reject(error: Error): void };

/** One `git cat-file --batch[-check]` process answering requests in order. */
class CatFile {
  private readonly directory: string;
  private readonly check: boolean;
  private child: ChildProcessByStdio<Writable, Readable, Readable> | undefined;
  private readonly pending: Pending[] = [];
  private headerParts: Buffer[] = [];
  private current: GitObject | undefined;
  private bodyParts: Buffer[] = [];
  private bodyRemaining = -1;
  private stderr = '';
  private readonly idleMs: number;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(directory: string, check: boolean, idleMs: number) {
    this.directory = directory;
    this.check = check;
    this.idleMs = idleMs;
  }

  /** The objects named (hashes or `rev:path` expressions), undefined for each one missing. */
  read(names: readonly string[]): Promise<Array<GitObject | undefined>> {
    if (names.length === 0) return Promise.resolve([]);
    for (const name of names) if (/[\n\r]/.test(name)) return Promise.reject(new GitError(`not an object name: ${JSON.stringify(name)}`));
    clearTimeout(this.idleTimer);
    const child = this.process();
    return new Promise((resolve, reject) => {
      this.pending.push({ count: names.length, results: [], resolve, reject });
      this.reference(true);
      child.stdin.write(`${names.join('\n')}\n`);
    });
  }

  private process(): ChildProcessByStdio<Writable, Readable, Readable> {
    if (this.child) return this.child;
    const child = spawn('git', [...SAFE_CONFIG, 'cat-file', this.check ? '--batch-check' : '--batch'], {
      cwd: this.directory, stdio: ['pipe', 'pipe', 'pipe'], env: gitEnvironment(),
    });
    this.child = child;
    child.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    child.stderr.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-2000)));
    // A write after the process died fails through 'close' below; not a crash of ours.
    child.stdin.on('error', () => undefined);
    const fail = (reason: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.headerParts = [];
      this.bodyParts = [];
      this.bodyRemaining = -1;
      const error = new GitError(`git cat-file in ${this.directory} ${reason}${this.stderr ? `: ${this.stderr.trim()}` : ''}`);
      this.stderr = '';
      for (const request of this.pending.splice(0)) request.reject(error);
    };
    child.on('error', (error) => fail(`could not run: ${error.message}`));
    child.on('close', (code, signal) => fail(`exited (${signal ?? code})`));
    return child;
  }

  /** Holds the event loop while requests are pending, lets it go when idle. */
  private reference(on: boolean): void {
    const child = this.child;
    if (!child) return;
    for (const handle of [child, child.stdin, child.stdout, child.stderr] as Array<{ ref?: () => void; unref?: () => void }>) {
      if (on) handle.ref?.();
      else handle.unref?.();
    }
  }

  private deliver(object: GitObject | undefined): void {
    const request = this.pending[0];
    if (!request) return;
    request.results.push(object);
    if (request.results.length === request.count) {
      this.pending.shift();
      request.resolve(request.results);
      if (this.pending.length === 0) {
        this.reference(false);
        this.idleTimer = setTimeout(() => this.close(), this.idleMs);
        this.idleTimer.unref();
      }
    }
  }

  /** Lets the idle process go: detached first, so a request from now on starts a new one. */
  private close(): void {
    const child = this.child;
    if (!child || this.pending.length > 0) return;
    this.child = undefined;
    child.stdin.end();
  }

  private onData(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.bodyRemaining < 0) {
        const newline = chunk.indexOf(0x0a, offset);
        if (newline < 0) {
          this.headerParts.push(chunk.subarray(offset));
          return;
        }
        this.headerParts.push(chunk.subarray(offset, newline));
        offset = newline + 1;
        const header = Buffer.concat(this.headerParts).toString('utf8');
        this.headerParts = [];
        // "<oid> <type> <size>", or "<name> missing" / "<name> ambiguous" (a name may hold spaces).
        const match = /^([0-9a-f]{40,64}) (\S+) (\d+)$/.exec(header);
        if (!match) {
          this.deliver(undefined);
          continue;
        }
        const object = { oid: match[1], type: match[2], size: Number(match[3]) };
        if (this.check) {
          this.deliver(object);
          continue;
        }
        this.current = object;
        this.bodyParts = [];
        this.bodyRemaining = object.size + 1; // the content, then a newline
      } else {
        const take = Math.min(this.bodyRemaining, chunk.length - offset);
        this.bodyParts.push(chunk.subarray(offset, offset + take));
        offset += take;
        this.bodyRemaining -= take;
        if (this.bodyRemaining === 0) {
          const object = this.current!;
          const body = this.bodyParts.length === 1 ? this.bodyParts[0] : Buffer.concat(this.bodyParts);
          this.bodyParts = [];
          this.bodyRemaining = -1;
          this.current = undefined;
          this.deliver({ ...object, content: body.subarray(0, object.size) });
        }
      }
    }
  }
}

/** Parses a tree object: `<mode> <name>\0<raw oid>` entries. */
function parseTree(content: Buffer, oidBytes: number): TreeEntry[] {
  const entries: TreeEntry[] = [];
  let offset = 0;
  while (offset < content.length) {
    const space = content.indexOf(0x20, offset);
    const nul = content.indexOf(0, space);
    if (space < 0 || nul < 0) break;
    const mode = content.toString('latin1', offset, space);
    const path = content.toString('utf8', space + 1, nul);
    const oid = content.toString('hex', nul + 1, nul + 1 + oidBytes);
    entries.push({ path, oid, mode });
    offset = nul + 1 + oidBytes;
  }
  return entries;
}

const TREE_MODE = '40000';

export class GitObjects {
  private readonly contents: CatFile;
  private readonly checks: CatFile;

  constructor(directory: string, options: { readonly idleMs?: number } = {}) {
    this.contents = new CatFile(directory, false, options.idleMs ?? IDLE_MS);
    this.checks = new CatFile(directory, true, options.idleMs ?? IDLE_MS);
  }

  /** Contents by object name; names that are missing are left out. */
  async read(names: readonly string[]): Promise<Map<string, Buffer>> {
    const unique = [...new Set(names)];
    const objects = await this.contents.read(unique);
    const out = new Map<string, Buffer>();
    unique.forEach((name, index) => {
      const content = objects[index]?.content;
      if (content) out.set(name, content);
    });
    return out;
  }

  /** Sizes of blobs by hash (the missing left out). */
  async sizes(oids: readonly string[]): Promise<Map<string, number>> {
    const unique = [...new Set(oids)].filter((oid) => oid !== NULL_OID);
    const objects = await this.checks.read(unique);
    const out = new Map<string, number>();
    unique.forEach((oid, index) => {
      const object = objects[index];
      if (object?.type === 'blob') out.set(oid, object.size);
    });
    return out;
  }

  /** A file's content at a commit, or undefined when there is no such file. */
  async fileAt(commit: string, file: string): Promise<string | undefined> {
    const [object] = await this.contents.read([`${commit}:${file}`]);
    return object?.type === 'blob' ? object.content?.toString('utf8') : undefined;
  }

  /** Every regular file of a commit (not symlinks or submodules), read level by level. */
  async listFiles(commit: string): Promise<TreeEntry[]> {
    const files: TreeEntry[] = [];
    let level = [{ prefix: '', name: `${commit}^{tree}` }];
    while (level.length > 0) {
      const objects = await this.contents.read(level.map((tree) => tree.name));
      const next: typeof level = [];
      level.forEach((tree, index) => {
        const object = objects[index];
        if (object?.type !== 'tree' || !object.content) throw new GitError(`tree ${tree.name} is missing from ${commit}`);
        for (const entry of parseTree(object.content, object.oid.length / 2)) {
          const path = tree.prefix + entry.path;
          if (entry.mode === TREE_MODE) next.push({ prefix: `${path}/`, name: entry.oid });
          else if (regular(entry.mode)) files.push({ ...entry, path });
        }
      });
      level = next;
    }
    return files;
  }

  /**
   * Files that differ between two commits, as `git diff-tree -r --no-renames` lists them (a rename
   * is a deletion and an addition; an absent side is NULL_OID with mode 000000). Subtrees with the
   * same hash on both sides are not read.
   */
  async diff(from: string, to: string): Promise<DiffEntry[]> {
    const changes: DiffEntry[] = [];
    type Pair = { prefix: string; old: string | null; new: string | null };
    let level: Pair[] = [{ prefix: '', old: `${from}^{tree}`, new: `${to}^{tree}` }];
    while (level.length > 0) {
      const names = level.flatMap((pair) => [pair.old, pair.new].filter((name): name is string => name !== null));
      const objects = new Map<string, GitObject | undefined>();
      (await this.contents.read(names)).forEach((object, index) => objects.set(names[index], object));
      const entriesOf = (name: string | null): Map<string, TreeEntry> => {
        if (name === null) return new Map();
        const object = objects.get(name);
        if (object?.type !== 'tree' || !object.content) throw new GitError(`tree ${name} is missing (diff of ${from}..${to})`);
        return new Map(parseTree(object.content, object.oid.length / 2).map((entry) => [entry.path, entry]));
      };
      const next: Pair[] = [];
      for (const pair of level) {
        const before = entriesOf(pair.old);
        const after = entriesOf(pair.new);
        for (const name of new Set([...before.keys(), ...after.keys()])) {
          const a = before.get(name);
          const b = after.get(name);
          if (a && b && a.oid === b.oid && a.mode === b.mode) continue;
          const path = pair.prefix + name;
          const aTree = a?.mode === TREE_MODE;
          const bTree = b?.mode === TREE_MODE;
          if (aTree || bTree) next.push({ prefix: `${path}/`, old: aTree ? a.oid : null, new: bTree ? b.oid : null });
          const oldFile = a && !aTree ? a : undefined;
          const newFile = b && !bTree ? b : undefined;
          if (oldFile || newFile) {
            changes.push({ path, oldBlob: oldFile?.oid ?? NULL_OID, newBlob: newFile?.oid ?? NULL_OID, oldMode: oldFile?.mode ?? '000000', newMode: newFile?.mode ?? '000000' });
          }
        }
      }
      level = next;
    }
    return changes;
  }
}

export function regular(mode: string): boolean {
  return mode === '100644' || mode === '100755';
}
