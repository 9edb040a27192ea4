import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { processAlive } from '../shared/process-alive.ts';

/**
 * A lock file beside the host's base clone, taken around every write to the clone's `.git`
 * (worktree add and remove, branch deletion, fetch). It needs no database, so a worker cleans its
 * worktree up during a database outage, and it dies with its holder: a lock whose holder process
 * is gone (on this host) is broken by the next taker.
 *
 * Taking it links a fully written file naming the holder (host, pid, a random token) to the lock's
 * name: `link(2)` fails when the name exists, and the lock is never seen half-written. (It used to
 * be an exclusive create followed by a write: a taker reading the empty file in between judged it
 * stale and moved it aside, and the put-back could leave a released holder's lock in place for
 * good, naming a live process, so every worker of the host waited for it: the full-path bench's
 * stall.)
 *
 * Breaking a dead holder's lock is done by one breaker at a time on the host, under a kernel-held
 * mutex (an abstract Unix socket named after the lock, freed by the kernel if the breaker dies):
 * it reads the lock again and deletes it only if it is still the dead holder's. Nothing else can
 * change the file meanwhile (a taker only creates it when absent; its dead holder releases
 * nothing), so a live lock is never removed or resurrected.
 */

interface Holder {
  readonly host: string;
  readonly pid: number;
  readonly token: string;
}

const POLL_MS = 10;
/**
 * Only a lock written by an exclusive create and then a write (an older Loreley, or a file system
 * without hard links) can be read empty or torn; past this age its taker is gone.
 */
const UNREADABLE_STALE_MS = 5000;

function parse(text: string): Holder | undefined {
  try {
    const holder = JSON.parse(text) as Holder;
    return typeof holder.pid === 'number' && typeof holder.host === 'string' ? holder : undefined;
  } catch {
    return undefined;
  }
}

async function isStale(file: string, seen: string): Promise<boolean> {
  const holder = parse(seen);
  if (holder) return holder.host === os.hostname() && !processAlive(holder.pid);
  const modified = await stat(file).then((info) => info.mtimeMs, () => undefined);
  return modified !== undefined && Date.now() - modified > UNREADABLE_STALE_MS;
}

/**
 * The breakers' mutex: listening on an abstract Unix socket (Linux) succeeds for one process at a
 * time, and the kernel frees the name when that process dies, so the mutex itself never goes
 * stale. Undefined when another breaker holds it; `null` where abstract sockets do not exist
 * (not Linux): there two breakers of one dead lock can race, and the later one may delete the
 * lock the earlier one took meanwhile (an overlap, never a lock left behind).
 */
function breakerMutex(file: string): Promise<Server | undefined | null> {
  const name = `\0loreley-lock-${createHash('sha256').update(path.resolve(file)).digest('hex').slice(0, 32)}`;
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'EADDRINUSE' ? undefined : null));
    server.listen({ path: name }, () => resolve(server));
  });
}

async function breakIfStale(file: string, seen: string): Promise<void> {
  if (!(await isStale(file, seen))) return;
  const mutex = await breakerMutex(file);
  if (mutex === undefined) return; // Another breaker is at it.
  try {
    // Under the mutex no other breaker acts, and a taker only creates the file when it is absent:
    // if it still holds what we judged, it is the dead holder's.
    const current = await readFile(file, 'utf8').catch(() => undefined);
    if (current === seen) await rm(file, { force: true });
  } finally {
    if (mutex) await new Promise((resolve) => mutex.close(resolve));
  }
}

/** Error codes of a file system without hard links (some network and FUSE mounts). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV']);

/** One attempt: true when the lock is ours. */
async function take(file: string, draft: string, text: string): Promise<boolean> {
  await writeFile(draft, text);
  try {
    await link(draft, file);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? '';
    if (code === 'EEXIST') return false;
    if (!NO_HARD_LINKS.has(code)) throw error;
  } finally {
    await rm(draft, { force: true });
  }
  // No hard links here: an exclusive create, then the write. A taker may read the file empty in
  // between; it is judged stale only once older than UNREADABLE_STALE_MS.
  try {
    await writeFile(file, text, { flag: 'wx' });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

export async function withFileLock<T>(file: string, fn: () => Promise<T>, options: { timeoutMs?: number } = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 300_000;
  const me: Holder = { host: os.hostname(), pid: process.pid, token: randomBytes(8).toString('hex') };
  const text = JSON.stringify(me);
  const draft = `${file}.${process.pid}.${me.token}.taking`;
  const deadline = Date.now() + timeoutMs;
  // The clone's parent does not exist before the first clone (LORELEY_DATA_DIR/repos/).
  await mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    // Written whole, then linked under the lock's name: the lock is never seen half-written. The
    // draft is removed at once, so a taker killed while it waits leaves nothing behind.
    if (await take(file, draft, text)) break;
    const seen = await readFile(file, 'utf8').catch(() => undefined);
    if (seen !== undefined) await breakIfStale(file, seen);
    if (Date.now() > deadline) throw new Error(`the lock ${file} is held by ${seen ?? 'someone'} for over ${Math.round(timeoutMs / 1000)} s`);
    await sleep(POLL_MS);
  }
  try {
    return await fn();
  } finally {
    // Only our own lock (a lock is only ever removed by its holder, or by a breaker once its
    // holder is dead: it is still ours).
    const current = await readFile(file, 'utf8').catch(() => undefined);
    if (current === text) await rm(file, { force: true });
  }
}
