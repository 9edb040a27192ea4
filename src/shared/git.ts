import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { appendFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { storableText } from './storable.ts';

/**
 * Named git operations, each one `git` process run directly (no shell). Nothing is cached, so
 * several processes can share one clone as long as writers hold the clone's lock.
 *
 * Not simple-git: it waits an extra 50 ms after every command that prints nothing (`worktree add
 * --quiet`, `commit --quiet`, `push --quiet`, …), about 300 ms per job, six times the git work.
 */

/**
 * What git may see of this process's environment: what it needs to reach a remote (PATH, HOME for
 * the operator's own ~/.gitconfig and credentials, SSH agent, proxies, certificates), never
 * DATABASE_URL, API keys, NODE_OPTIONS or GIT_* variables that would redirect it.
 */
const GIT_ENV_KEEP = new Set([
  'PATH', 'HOME', 'USER', 'LOGNAME', 'TMPDIR', 'TZ', 'XDG_CONFIG_HOME', 'SSH_AUTH_SOCK', 'SSH_AGENT_PID',
  'GIT_SSH', 'GIT_SSH_COMMAND', 'GIT_SSL_CAINFO', 'GIT_SSL_CAPATH', 'SSL_CERT_FILE', 'SSL_CERT_DIR',
  'GIT_CONFIG_GLOBAL', 'GIT_CONFIG_SYSTEM', 'GIT_CONFIG_NOSYSTEM',
  'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'no_proxy', 'all_proxy',
]);

export function gitEnvironment(source: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(source)) if (value !== undefined && GIT_ENV_KEEP.has(key)) env[key] = value;
  // A credential prompt would hang a worker forever; a missing credential must fail instead.
  env.GIT_TERMINAL_PROMPT = '0';
  env.LC_ALL = 'C';
  return env;
}

/**
 * Given on every call (command-line config wins over every file): no hook runs, whoever wrote it
 * (an agent can write `.git/hooks/post-commit` or set core.hooksPath), no fsmonitor command, no
 * `ext::` transport.
 */
export const SAFE_CONFIG = ['-c', 'core.hooksPath=/dev/null', '-c', 'core.fsmonitor=false', '-c', 'protocol.ext.allow=never'];

const MAX_OUTPUT = 256 * 1024 * 1024;

export class GitError extends Error {
  override readonly name = 'GitError';
}

export interface Git {
  /** Runs `git <args>` in the directory and resolves with its stdout. */
  raw(args: readonly string[]): Promise<string>;
}

/**
 * A base clone whose jobs' worktrees run candidate code. Its `.git/config` is shared by every
 * worktree and writable by the agent where there is no sandbox; config can run commands
 * (`core.sshCommand`, `credential.helper`, `filter.*.clean`, `remote.*.uploadpack`,
 * `include.path`, …), so Loreley owns the file whole: it is rewritten to the few keys a clone needs
 * and checked before every git call in the clone or its worktrees. A change found later is put
 * back and the git call refused. Worktree calls name their git directory themselves: the
 * worktree's `.git` file is the candidate's and could point anywhere.
 */
interface ProtectedClone {
  readonly base: string;
  readonly worktreesRoot: string;
  readonly configFile: string;
  readonly remoteUrl: string;
  canonical?: string;
}

const protectedClones: ProtectedClone[] = [];

/** Registers a base clone (and its `<base>-worktrees/` directory) for the protection above. */
export function protectClone(base: string, remoteUrl: string): void {
  const resolved = path.resolve(base);
  if (protectedClones.some((clone) => clone.base === resolved)) return;
  protectedClones.push({ base: resolved, worktreesRoot: `${resolved}-worktrees`, configFile: path.join(resolved, '.git', 'config'), remoteUrl });
}

function canonicalConfig(existing: string, remoteUrl: string): string {
  const sha256 = /^\s*objectformat\s*=\s*sha256\s*$/im.test(existing);
  return [
    '[core]',
    `\trepositoryformatversion = ${sha256 ? 1 : 0}`,
    '\tfilemode = true',
    '\tbare = false',
    '\tlogallrefupdates = true',
    ...(sha256 ? ['[extensions]', '\tobjectformat = sha256'] : []),
    '[remote "origin"]',
    `\turl = "${remoteUrl.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`,
    '\tfetch = +refs/heads/*:refs/remotes/origin/*',
    '',
  ].join('\n');
}

/** Puts the clone's config back to Loreley's; true when it had been changed since we last wrote it. */
function enforceConfig(clone: ProtectedClone): boolean {
  let current: string;
  try {
    current = readFileSync(clone.configFile, 'utf8');
  } catch {
    return false; // Not cloned yet.
  }
  const firstLook = clone.canonical === undefined;
  clone.canonical ??= canonicalConfig(current, clone.remoteUrl);
  if (current === clone.canonical) return false;
  writeFileSync(clone.configFile, clone.canonical);
  return !firstLook;
}

/**
 * The worktree's administrative directory in the base clone, found from the clone's side: the one
 * whose `gitdir` file names this worktree (git names it after the worktree, with a number added
 * when that name was taken).
 */
function adminDirectory(base: string, worktree: string): string | undefined {
  const admin = path.join(base, '.git', 'worktrees');
  const pointsHere = (dir: string) => {
    try {
      return path.resolve(readFileSync(path.join(dir, 'gitdir'), 'utf8').trim()) === path.join(worktree, '.git');
    } catch {
      return false;
    }
  };
  const named = path.join(admin, path.basename(worktree));
  if (pointsHere(named)) return named;
  try {
    return readdirSync(admin).map((name) => path.join(admin, name)).find(pointsHere);
  } catch {
    return undefined;
  }
}

/** The git arguments that pin a call to the protected clone, or none for other directories. */
function pinned(cwd: string | undefined): { prefix: string[]; clone?: ProtectedClone } {
  if (cwd === undefined) return { prefix: [] };
  const resolved = path.resolve(cwd);
  for (const clone of protectedClones) {
    if (resolved === clone.base) return { prefix: [], clone };
    if (path.dirname(resolved) === clone.worktreesRoot) {
      const gitDir = adminDirectory(clone.base, resolved);
      return { prefix: gitDir ? [`--git-dir=${gitDir}`, `--work-tree=${resolved}`] : [], clone };
    }
  }
  return { prefix: [] };
}

function runGit(cwd: string | undefined, args: readonly string[]): Promise<string> {
  const { prefix, clone } = pinned(cwd);
  if (clone && enforceConfig(clone)) {
    return Promise.reject(new GitError(`git ${args[0]} refused: ${clone.configFile} was changed while jobs ran (by a candidate?); Loreley's copy is restored`));
  }
  return new Promise((resolve, reject) => {
    execFile('git', [...SAFE_CONFIG, ...prefix, ...args], { cwd, env: gitEnvironment(), maxBuffer: MAX_OUTPUT, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const detail = (stderr || error.message).trim().split('\n').slice(-3).join(' ');
        reject(new GitError(`git ${args[0]} failed: ${detail}`));
      } else {
        resolve(stdout);
      }
    });
  });
}

export function gitAt(directory: string | undefined = undefined): Git {
  return { raw: (args) => runGit(directory, args) };
}

export function isGitRepository(directory: string): boolean {
  return existsSync(path.join(directory, '.git')) || existsSync(path.join(directory, 'HEAD'));
}

/** Clones `remote` into `directory` unless a clone is already there; then fetches every branch. */
export async function cloneOrFetch(remote: string, directory: string): Promise<'cloned' | 'fetched'> {
  if (!isGitRepository(directory)) {
    await mkdir(path.dirname(directory), { recursive: true });
    await gitAt().raw(['clone', '--no-checkout', '--quiet', remote, directory]);
    return 'cloned';
  }
  await fetchAll(directory);
  return 'fetched';
}

export async function fetchAll(directory: string): Promise<void> {
  await gitAt(directory).raw(['fetch', '--quiet', '--prune', 'origin', '+refs/heads/*:refs/remotes/origin/*']);
}

export async function hasCommit(directory: string, commit: string): Promise<boolean> {
  try {
    await gitAt(directory).raw(['cat-file', '-e', `${commit}^{commit}`]);
    return true;
  } catch {
    return false;
  }
}

export async function resolveCommit(directory: string, ref: string): Promise<string> {
  return (await gitAt(directory).raw(['rev-parse', '--verify', '--quiet', `${ref}^{commit}`])).trim();
}

/** Adds a path to the clone's shared exclude file, so worktrees never commit it. */
export async function excludePath(directory: string, pattern: string): Promise<void> {
  const commonDir = (await gitAt(directory).raw(['rev-parse', '--git-common-dir'])).trim();
  const file = path.resolve(directory, commonDir, 'info', 'exclude');
  await mkdir(path.dirname(file), { recursive: true });
  const current = existsSync(file) ? await readFile(file, 'utf8') : '';
  if (!current.split('\n').includes(pattern)) await appendFile(file, `${current.endsWith('\n') || current === '' ? '' : '\n'}${pattern}\n`);
}

/**
 * A worktree at `commit`: on `branch` (reset if it exists, so a retried job starts clean), or with
 * a detached HEAD when `branch` is undefined (no local branch to delete afterwards).
 */
export async function addWorktree(baseClone: string, worktree: string, branch: string | undefined, commit: string): Promise<void> {
  await mkdir(path.dirname(worktree), { recursive: true });
  if (branch === undefined && (await addDetachedWorktree(baseClone, worktree, commit))) return;
  await gitAt(baseClone).raw(['worktree', 'add', '--quiet', '--force', ...(branch === undefined ? ['--detach'] : ['-B', branch]), worktree, commit]);
}

/**
 * A detached worktree registered as `git worktree add --detach` registers it, in one git process
 * instead of three (`worktree add` runs `update-ref` and `reset --hard` as children): the
 * administrative directory `<clone>/.git/worktrees/<name>/` with `HEAD`, `commondir` and `gitdir`
 * (the layout git has read since worktrees exist), the worktree's `.git` file pointing at it, then
 * `git read-tree --reset -u <commit>`, which writes the files and the index as `reset --hard`
 * does. 1.8 CPU-ms against 6.5, inside the clone's lock. False (nothing made) when the name is
 * taken or `commit` is not a full hash: the caller asks git, which picks another name.
 * `gitdir` and `commondir` are written last, so a worker killed half-way leaves a registration
 * the next job's recovery recognises as half-made and clears.
 */
async function addDetachedWorktree(baseClone: string, worktree: string, commit: string): Promise<boolean> {
  if (!isFullHash(commit)) return false;
  const target = path.resolve(worktree);
  const admin = path.join(path.resolve(baseClone), '.git', 'worktrees', path.basename(target));
  await mkdir(path.dirname(admin), { recursive: true });
  try {
    await mkdir(admin);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    // Locked while it is written, as git does: a `git worktree prune` (run by a `gc --auto` in any
    // process) removes a registration without its gitdir file at once, unless it is locked.
    await writeFile(path.join(admin, 'locked'), 'initializing\n');
    await mkdir(target, { recursive: true });
    await writeFile(path.join(admin, 'HEAD'), `${commit}\n`);
    await writeFile(path.join(target, '.git'), `gitdir: ${admin}\n`);
    await writeFile(path.join(admin, 'commondir'), '../..\n');
    await writeFile(path.join(admin, 'gitdir'), `${path.join(target, '.git')}\n`);
    await rm(path.join(admin, 'locked'));
    await gitAt(target).raw(['read-tree', '--reset', '-u', commit]);
    return true;
  } catch (error) {
    // Nothing half-made is left for the caller's retry (a parent fetched first, say).
    await rm(admin, { recursive: true, force: true });
    await rm(path.join(target, '.git'), { force: true });
    throw error;
  }
}

/**
 * Unregisters a worktree: deletes its administrative directory in the clone (found from the
 * clone's side, whatever the worktree's own `.git` file says), which is all `git worktree remove
 * --force --force` does beyond deleting the directory, without a git process. The caller deletes
 * the directory; a worktree never registered (half-made) is left to it and to `pruneWorktrees`.
 */
export async function removeWorktree(baseClone: string, worktree: string): Promise<void> {
  const admin = adminDirectory(path.resolve(baseClone), path.resolve(worktree));
  if (admin !== undefined) await rm(admin, { recursive: true, force: true });
}

export async function pruneWorktrees(baseClone: string): Promise<void> {
  await gitAt(baseClone).raw(['worktree', 'prune']);
}

export interface Author {
  readonly name: string;
  readonly email: string;
}

export interface Commit {
  readonly hash: string;
  /** Paths the commit changed against its parent. */
  readonly files: readonly string[];
}

/** Stages everything and commits; returns undefined when there was nothing to commit. */
export async function commitAll(worktree: string, message: string, author: Author): Promise<Commit | undefined> {
  const git = gitAt(worktree);
  await git.raw(['add', '--all']);
  const files = (await git.raw(['diff', '--cached', '--name-only'])).split('\n').map((line) => line.trim()).filter((line) => line !== '');
  if (files.length === 0) return undefined;
  // A message can hold anything an agent printed: no NUL (git refuses it), no secret (it is pushed).
  await git.raw(['-c', `user.name=${author.name}`, '-c', `user.email=${author.email}`, 'commit', '--quiet', '--no-verify', '--no-gpg-sign', '-m', storableText(message)]);
  return { hash: detachedHead(worktree) ?? (await git.raw(['rev-parse', 'HEAD'])).trim(), files };
}

/**
 * The commit a protected worktree's detached HEAD names, read from its administrative directory
 * (no git process); undefined when HEAD is a branch or the worktree is not one of ours.
 */
function detachedHead(worktree: string): string | undefined {
  const { prefix } = pinned(worktree);
  const gitDir = prefix.find((arg) => arg.startsWith('--git-dir='))?.slice('--git-dir='.length);
  if (gitDir === undefined) return undefined;
  try {
    const head = readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    return isFullHash(head) ? head : undefined;
  } catch {
    return undefined;
  }
}

export async function diff(directory: string, from: string, to: string, paths: readonly string[] = []): Promise<string> {
  return gitAt(directory).raw(['diff', '--no-color', '--no-ext-diff', '--no-textconv', from, to, ...(paths.length ? ['--', ...paths] : [])]);
}

/**
 * Pushes a commit to a branch of `remote` (a remote's name or URL), overwriting it, so a retried
 * job's push succeeds.
 *
 * Workers give the remote's URL, not `origin`: a push to a named remote also writes a
 * remote-tracking ref (`refs/remotes/origin/<branch>`) in the shared clone, one file per job that
 * nothing deletes (workers seldom fetch), and every push reads every ref of the clone before it
 * connects (git's `get_local_heads`). After 2,000 jobs that was 15–45 ms more per push, the
 * growth that slowed the last jobs of a run (WorkerRepository.sweepBranches deletes old ones).
 */
export async function pushBranch(directory: string, remote: string, branch: string, commit: string): Promise<void> {
  await gitAt(directory).raw(['push', '--quiet', '--force', remote, `${commit}:refs/heads/${branch}`]);
}

/**
 * Deletes every ref under `prefix` (e.g. the remote-tracking refs of job branches that pushes to
 * `origin` left, one per job) in one `git update-ref --stdin`; returns how many.
 */
export async function deleteRefs(directory: string, prefix: string): Promise<number> {
  const refs = (await gitAt(directory).raw(['for-each-ref', '--format=%(refname)', prefix])).split('\n').filter(Boolean);
  if (refs.length === 0) return 0;
  await runGitWithInput(directory, ['update-ref', '--stdin'], refs.map((ref) => `delete ${ref}\n`).join(''));
  return refs.length;
}

/** Whether `text` is a whole object name (SHA-1 or SHA-256), not an abbreviation or a ref. */
export function isFullHash(text: string): boolean {
  return /^[0-9a-f]{40}([0-9a-f]{24})?$/.test(text);
}

/** Runs git with `input` on its standard input (`update-ref --stdin`, `fast-import`); rejects with its last stderr lines. */
export function runGitWithInput(directory: string, args: readonly string[], input: string | Buffer): Promise<void> {
  const { prefix, clone } = pinned(directory);
  if (clone && enforceConfig(clone)) {
    return Promise.reject(new GitError(`git ${args[0]} refused: ${clone.configFile} was changed while jobs ran (by a candidate?); Loreley's copy is restored`));
  }
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...SAFE_CONFIG, ...prefix, ...args], { cwd: directory, stdio: ['pipe', 'ignore', 'pipe'], env: gitEnvironment() });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new GitError(`git ${args[0]} failed: ${stderr.trim().split('\n').slice(-3).join(' ')}`))));
    child.stdin.end(input);
  });
}


/**
 * Reads many objects through one `git cat-file --batch` (one process however many): a thousand
 * notes or file blobs in one round trip. `objects` are anything cat-file resolves (a hash, or
 * `<rev>:<path>`); the map is keyed by them, and missing objects are left out.
 */
export async function readObjects(directory: string, objects: readonly string[]): Promise<Map<string, Buffer>> {
  const unique = [...new Set(objects)];
  const contents = await catFileBatch(directory, unique);
  const result = new Map<string, Buffer>();
  unique.forEach((object, index) => {
    const content = contents[index];
    if (content !== undefined) result.set(object, content);
  });
  return result;
}

/** One `git cat-file --batch`: each object's content in the order asked, undefined when missing. */
function catFileBatch(directory: string, objects: readonly string[]): Promise<Array<Buffer | undefined>> {
  if (objects.length === 0) return Promise.resolve([]);
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...SAFE_CONFIG, 'cat-file', '--batch'], { cwd: directory, stdio: ['pipe', 'pipe', 'pipe'], env: gitEnvironment() });
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new GitError(`git cat-file --batch exited with ${code}: ${stderr.trim()}`));
        return;
      }
      // Answers come in the order asked: "<hash> <type> <size>\n<content>\n", or "<object> missing\n".
      const buffer = Buffer.concat(chunks);
      const contents: Array<Buffer | undefined> = [];
      let offset = 0;
      while (offset < buffer.length && contents.length < objects.length) {
        const newline = buffer.indexOf(0x0a, offset);
        if (newline < 0) break;
        const header = buffer.subarray(offset, newline).toString('utf8').split(' ');
        offset = newline + 1;
        if (header.length < 3 || header[header.length - 1] === 'missing' || header[header.length - 1] === 'ambiguous') {
          contents.push(undefined);
          continue;
        }
        const size = Number(header[2]);
        contents.push(buffer.subarray(offset, offset + size));
        offset += size + 1;
      }
      resolve(contents);
    });
    child.stdin.end(`${objects.join('\n')}\n`);
  });
}
