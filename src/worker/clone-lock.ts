import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
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
 * Taking it is an exclusive create (`O_EXCL`) of a file naming the holder (host, pid, a random
 * token). Breaking a dead holder's lock renames the file aside first and checks it was still the
 * dead holder's, so two takers breaking the same stale lock cannot remove a live one.
 */

interface Holder {
  readonly host: string;
  readonly pid: number;
  readonly token: string;
}

const POLL_MS = 10;

function parse(text: string): Holder | undefined {
  try {
    const holder = JSON.parse(text) as Holder;
    return typeof holder.pid === 'number' && typeof holder.host === 'string' ? holder : undefined;
  } catch {
    return undefined;
  }
}

async function breakIfStale(file: string, seen: string): Promise<void> {
  const holder = parse(seen);
  // Half-written (its taker died between create and write) or a dead process on this host.
  const stale = holder === undefined || (holder.host === os.hostname() && !processAlive(holder.pid));
  if (!stale) return;
  const aside = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
  try {
    await rename(file, aside);
  } catch {
    return; // Someone else broke it first.
  }
  const moved = await readFile(aside, 'utf8').catch(() => '');
  if (moved !== seen) {
    // Not the lock we judged: a live taker's. Put it back where it was (nobody can have taken the
    // name meanwhile without seeing no file, so a failure here means they hold it: drop ours).
    await rename(aside, file).catch(() => rm(aside, { force: true }));
    return;
  }
  await rm(aside, { force: true });
}

export async function withFileLock<T>(file: string, fn: () => Promise<T>, options: { timeoutMs?: number } = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 300_000;
  const me: Holder = { host: os.hostname(), pid: process.pid, token: randomBytes(8).toString('hex') };
  const text = JSON.stringify(me);
  const deadline = Date.now() + timeoutMs;
  // The clone's parent does not exist before the first clone (LORELEY_DATA_DIR/repos/).
  await mkdir(path.dirname(file), { recursive: true });
  for (;;) {
    try {
      await writeFile(file, text, { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const seen = await readFile(file, 'utf8').catch(() => undefined);
    if (seen !== undefined) await breakIfStale(file, seen);
    if (Date.now() > deadline) throw new Error(`the lock ${file} is held by ${seen ?? 'someone'} for over ${Math.round(timeoutMs / 1000)} s`);
    await sleep(POLL_MS);
  }
  try {
    return await fn();
  } finally {
    // Only our own lock: if it was broken and retaken (we were wrongly judged dead), leave it.
    const current = await readFile(file, 'utf8').catch(() => undefined);
    if (current === text) await rm(file, { force: true });
  }
}
