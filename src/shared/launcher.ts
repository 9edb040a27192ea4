import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { processAlive } from './process-alive.ts';

/**
 * Starts commands from a small long-lived `bash` instead of forking this process.
 *
 * `fork` copies the page tables of the process that calls it, and the child pays again to drop
 * them when it execs: the bigger the worker, the more each command costs (bench/job-overhead.ts
 * measures it). A launcher is one bash per command running at once; for each command the worker
 * writes a small script (input, cwd, environment, the argument list, every value single-quoted,
 * never interpreted) and sends its path on the launcher's stdin; bash forks a subshell that sources
 * it and `exec`s the command. The launcher is a process group of its own, and that group is what the
 * caller signals on a timeout: the launcher dies with the command and the next command gets a new one.
 *
 * The launcher is the first process of a PID namespace of its own (`unshare --pid --fork
 * --kill-child --mount-proc`, started once), so a command needs no `unshare` exec of its own (this
 * is pid-namespace containment; see launcherFor in src/shared/sandbox.ts for why bubblewrap
 * commands are spawned directly). When a command exits, the launcher kills every other process in
 * the namespace (`kill -9 -1` from a namespace's init reaches exactly those) and waits until none is
 * left. If the launcher dies, the kernel kills the namespace. The command sees the launcher as its
 * PID 1 in its own /proc: an empty environment, the script below; the worker stays invisible.
 *
 * The command's stdout and stderr are the launcher's, shared by the commands it runs one after
 * another. Once nothing of a command is left, the launcher draws a random marker ($SRANDOM, from
 * getrandom: it did not exist while anything of the command ran, so no command can print it),
 * writes it on both and sends it with the exit status: what came before it is the command's output,
 * in pipe order. Until the marker is known, the last MARKER_BYTES of each stream are held back.
 * Before a launcher runs another command, the worker checks it from outside (`intact`).
 * A process-group-only command may leave a `setsid` child writing to the pipes: such commands are
 * spawned directly (src/shared/subprocess.ts).
 */

/** How commands are started from a launcher: the `unshare` flags that make its PID namespace. */
export interface LauncherKind {
  readonly unshare: readonly string[];
}

/** Variables bash sets or computes itself: a command whose environment names one is spawned directly. */
const BASH_OWN = /^(BASH.*|SHELLOPTS|EUID|UID|PPID|GROUPS|RANDOM|SRANDOM|SECONDS|LINENO|HISTCMD|FUNCNAME|EPOCHSECONDS|EPOCHREALTIME|DIRSTACK|PIPESTATUS|COMP_WORDBREAKS)$/;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

// fd 4 keeps the commands' stderr; the launcher's own messages go nowhere. On fd 3: `R` once
// ready, then per request `S` once forked and `E <status> <marker>` once it exited and the markers
// are out (`E <status>` alone when the launcher gives up waiting and exits).
// After a command, everything else in the namespace is killed, then waited for until only zombies
// (whose pipes are closed) are left, with bash builtins only (no fork): a scan of the namespace's
// /proc, then 1 ms pauses (`read -t` on stdin, where no request comes before `E`). Past
// SETTLE_ROUNDS the launcher exits instead, and the kernel ends what is left with its namespace.
const SETTLE_ROUNDS = 500;
const SETTLE = [
  // Nothing signalled: nothing was left (the usual case), no scan needed.
  '  if kill -9 -1; then',
  '    for ((round = 0; ; round++)); do',
  '      busy=',
  '      for stat in /proc/[0-9]*/stat; do',
  '        [ "$stat" = /proc/1/stat ] && continue',
  '        read -r line < "$stat" || continue',
  '        state=${line##*) }',
  '        [ "${state%% *}" = Z ] || { busy=1; break; }',
  '      done',
  '      [ -z "$busy" ] && break',
  `      if ((round >= ${SETTLE_ROUNDS})); then echo "E $status" >&3; exit 0; fi`,
  '      read -r -t 0.001 pause',
  '      (($? > 128)) || exit 0',
  '    done',
  '  fi',
];

/** Hex characters of the end marker: four 32-bit $SRANDOM values. */
const MARKER_BYTES = 32;

function launcherScript(): string {
  return [
    'exec 4>&2 2>/dev/null',
    // bash 5.1+: $SRANDOM (else the launcher is not used and commands are spawned directly).
    '[[ -n $SRANDOM ]] || exit 3',
    'echo R >&3',
    'while read -r request; do',
    '  ( exec 2>&4 3>&- 4>&-; . "$request" ) &',
    '  echo S >&3',
    '  wait "$!"',
    '  status=$?',
    ...SETTLE,
    `  printf -v marker '%08x%08x%08x%08x' "$SRANDOM" "$SRANDOM" "$SRANDOM" "$SRANDOM"`,
    `  printf '%s' "$marker"`,
    `  printf '%s' "$marker" >&4`,
    '  echo "E $status $marker" >&3',
    'done',
  ].join('\n');
}

/** What `start` needs; the environment is the command's whole environment. */
export interface LaunchRequest {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly input: string;
}

/** A command started by a launcher. Output callbacks are called until `outputEnded` settles. */
export interface LaunchedCommand {
  /** Resolves once it is forked; rejects if the launcher died first. */
  readonly started: Promise<void>;
  /** The process group to signal to end it: the launcher's, which dies with it. */
  readonly group: number;
  /** Its exit, as `wait` reports it (128 + n: killed by signal n), or the launcher's death. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every byte it wrote has been delivered (both markers seen, or the launcher gone). */
  readonly outputEnded: Promise<void>;
  /** Call once the result is taken: the launcher goes back to the pool, or is closed if the command did not end cleanly. */
  release(): void;
}

const quote = (value: string) => `'${value.replaceAll("'", `'\\''`)}'`;

/** Whether bash can hand this environment and these arguments over unchanged. */
function expressible(request: LaunchRequest): boolean {
  if (request.argv.some((arg) => arg.includes('\0')) || request.cwd.includes('\0')) return false;
  return Object.entries(request.env).every(([key, value]) => key === '_' || NAME.test(key) && !BASH_OWN.test(key) && !value.includes('\0'));
}

function requestScript(request: LaunchRequest, inputFile: string | undefined): string {
  // `_` is the one bash always sets itself, to the path of what it runs (as any shell would).
  const env = Object.entries(request.env).filter(([key]) => key !== '_');
  const lines = [
    inputFile ? `exec <${quote(inputFile)}` : 'exec </dev/null',
    `cd -- ${quote(request.cwd)} || exit 126`,
    // What bash adds of its own, unless the command's environment has it.
    'unset PWD OLDPWD SHLVL',
  ];
  if (env.length > 0) lines.push(`export ${env.map(([key, value]) => quote(`${key}=${value}`)).join(' ')}`);
  lines.push(`exec -- ${request.argv.map(quote).join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/**
 * One command's part of a launcher's stream: everything but the last MARKER_BYTES goes out as it
 * comes (the marker is the last thing written for the command); once the marker is known, the
 * bytes before it, and whether it was seen.
 */
class EndScanner {
  private held = Buffer.alloc(0);
  private marker: Buffer | undefined;
  private noMarker = false;

  push(chunk: Buffer): { data: Buffer; ended: boolean } {
    const all = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    if (this.noMarker) {
      this.held = Buffer.alloc(0);
      return { data: all, ended: false };
    }
    const at = this.marker ? all.indexOf(this.marker) : -1;
    if (at >= 0) {
      this.held = Buffer.alloc(0);
      return { data: all.subarray(0, at), ended: true };
    }
    const keep = Math.min(MARKER_BYTES, all.length);
    this.held = Buffer.from(all.subarray(all.length - keep));
    return { data: all.subarray(0, all.length - keep), ended: false };
  }

  know(marker: Buffer): { data: Buffer; ended: boolean } {
    this.marker = marker;
    return this.push(Buffer.alloc(0));
  }

  /** No marker will come (the launcher died): what is held back, and from now on everything, is output. */
  giveUp(): Buffer {
    this.noMarker = true;
    const rest = this.held;
    this.held = Buffer.alloc(0);
    return rest;
  }
}

interface Pending {
  readonly onStarted: () => void;
  readonly onExit: (status: number, marker: string | undefined) => void;
  readonly onDeath: (why: Error, signal: NodeJS.Signals | null) => void;
  readonly stdout: (chunk: Buffer) => void;
  readonly stderr: (chunk: Buffer) => void;
}

let directory: string | undefined;
let counter = 0;

/** A private directory for the request scripts and inputs: on tmpfs (/dev/shm) where there is one. */
function requestDirectory(): string {
  if (directory !== undefined) return directory;
  const base = tmpfs() ?? os.tmpdir();
  sweepStale(base);
  directory = mkdtempSync(path.join(base, `loreley-launch-${process.pid}-`));
  const made = directory;
  process.on('exit', () => rmSync(made, { recursive: true, force: true }));
  return made;
}

function tmpfs(): string | undefined {
  try {
    accessSync('/dev/shm', constants.W_OK);
    return statSync('/dev/shm').isDirectory() ? '/dev/shm' : undefined;
  } catch {
    return undefined;
  }
}

/** Directories left by SIGKILLed processes (their pid no longer runs). */
function sweepStale(base: string): void {
  try {
    for (const name of readdirSync(base)) {
      const pid = /^loreley-launch-(\d+)-/.exec(name)?.[1];
      if (pid === undefined || Number(pid) === process.pid || processAlive(Number(pid))) continue;
      rmSync(path.join(base, name), { recursive: true, force: true });
    }
  } catch {
    // Not ours to list: nothing to sweep.
  }
}

class Launcher {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly script: string;
  private readonly inputFile: string;
  private pending: Pending | undefined;
  private statusText = '';
  private stdoutScanner: EndScanner | undefined;
  private stderrScanner: EndScanner | undefined;
  private markerSeen: (() => void) | undefined;
  readonly ready: Promise<void>;
  dead = false;

  constructor(bash: string, kind: LauncherKind) {
    const dir = requestDirectory();
    counter += 1;
    this.script = path.join(dir, `${counter}.sh`);
    this.inputFile = path.join(dir, `${counter}.in`);
    const argv = ['unshare', ...kind.unshare, '--', bash, '--norc', '--noprofile', '-c', launcherScript()];
    // An empty environment: each command's comes from its script. `detached`: a process group of
    // its own, the one a timeout signals. In `/`: it holds no job's or experiment's directory.
    this.child = spawn(argv[0], argv.slice(1), { cwd: '/', env: {}, detached: true, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] }) as ChildProcessWithoutNullStreams;
    const status = this.child.stdio[3] as Readable;
    let markReady: () => void = () => undefined;
    let failReady: (error: Error) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    status.on('data', (chunk: Buffer) => {
      this.statusText += chunk.toString('latin1');
      let newline: number;
      while ((newline = this.statusText.indexOf('\n')) >= 0) {
        const line = this.statusText.slice(0, newline);
        this.statusText = this.statusText.slice(newline + 1);
        if (line === 'R') markReady();
        else if (line === 'S') this.pending?.onStarted();
        else if (line.startsWith('E ')) {
          const [status, marker] = line.slice(2).split(' ');
          this.pending?.onExit(Number(status), marker);
        }
      }
    });
    this.child.stdout.on('data', (chunk: Buffer) => this.output(chunk, 'stdout'));
    this.child.stderr.on('data', (chunk: Buffer) => this.output(chunk, 'stderr'));
    this.child.stdin.on('error', () => undefined);
    const died = (why: string, signal: NodeJS.Signals | null) => {
      if (this.dead) return;
      this.dead = true;
      failReady(new Error(why));
      this.pending?.onDeath(new Error(why), signal);
    };
    this.child.on('error', (error) => died(`the command launcher could not start: ${error.message}`, null));
    this.child.on('exit', (code, signal) => died(`the command launcher exited (${signal ?? `code ${code}`})`, signal));
  }

  /** The process group a command of this launcher is signalled through. */
  get group(): number | undefined {
    return this.child.pid;
  }

  private initPid: number | null | undefined;

  /** The launcher's bash, its namespace's first process: `unshare`'s one child. */
  private init(): number | undefined {
    if (this.initPid === undefined) {
      this.initPid = null;
      const pid = this.child.pid;
      try {
        const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ')[0];
        if (first) this.initPid = Number(first);
      } catch {
        // No /proc/<pid>/task/<tid>/children here: the launcher is not reused (see intact).
      }
    }
    return this.initPid ?? undefined;
  }

  /**
   * After a command, checked from outside, trusting nothing in the namespace: the launcher has no
   * child left (every process in a PID namespace descends from its first) and nothing traces it.
   * The launcher itself empties its namespace; this is what catches a command that took the
   * launcher over (ptrace) to keep something alive into the next command.
   */
  private intact(): boolean {
    const init = this.init();
    if (init === undefined) return false;
    try {
      if (!/^TracerPid:\s+0$/m.test(readFileSync(`/proc/${init}/status`, 'utf8'))) return false;
      return readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim() === '';
    } catch {
      return false;
    }
  }

  /** An idle launcher does not keep this process alive; one running a command does. */
  private hold(busy: boolean): void {
    if (busy) this.child.ref();
    else this.child.unref();
    for (const stream of [this.child.stdin, this.child.stdout, this.child.stderr, this.child.stdio[3]]) {
      const handle = stream as unknown as { ref?: () => void; unref?: () => void };
      if (busy) handle.ref?.();
      else handle.unref?.();
    }
  }

  private output(chunk: Buffer, stream: 'stdout' | 'stderr', marker?: Buffer): void {
    const scanner = stream === 'stdout' ? this.stdoutScanner : this.stderrScanner;
    if (!scanner || !this.pending) return; // Between commands nothing of ours writes: nothing to keep.
    const { data, ended } = marker ? scanner.know(marker) : scanner.push(chunk);
    if (data.length > 0) this.pending[stream](data);
    if (ended) {
      if (stream === 'stdout') this.stdoutScanner = undefined;
      else this.stderrScanner = undefined;
      this.markerSeen?.();
    }
  }

  start(request: LaunchRequest, stdout: (chunk: Buffer) => void, stderr: (chunk: Buffer) => void, done: (launcher: Launcher, reusable: boolean) => void): LaunchedCommand {
    this.stdoutScanner = new EndScanner();
    this.stderrScanner = new EndScanner();
    let resolveStarted!: () => void;
    let rejectStarted!: (error: Error) => void;
    let resolveExit!: (exit: { code: number | null; signal: NodeJS.Signals | null }) => void;
    let resolveEnded!: () => void;
    const started = new Promise<void>((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    started.catch(() => undefined);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => (resolveExit = resolve));
    const outputEnded = new Promise<void>((resolve) => (resolveEnded = resolve));
    let markers = 0;
    let exitSeen = false;
    this.markerSeen = () => {
      markers += 1;
      if (markers === 2) resolveEnded();
    };
    this.pending = {
      stdout,
      stderr,
      onStarted: resolveStarted,
      onExit: (status, marker) => {
        exitSeen = true;
        if (marker !== undefined && /^[0-9a-f]{32}$/.test(marker)) {
          const bytes = Buffer.from(marker, 'latin1');
          this.output(Buffer.alloc(0), 'stdout', bytes);
          this.output(Buffer.alloc(0), 'stderr', bytes);
        }
        const signal = status > 128 ? signalName(status - 128) : undefined;
        resolveExit(signal ? { code: null, signal } : { code: status, signal: null });
      },
      onDeath: (why, signal) => {
        rejectStarted(why);
        resolveExit({ code: null, signal: signal ?? 'SIGKILL' });
        // No marker will come: what is in the pipes still arrives until they close.
        for (const stream of ['stdout', 'stderr'] as const) {
          const rest = (stream === 'stdout' ? this.stdoutScanner : this.stderrScanner)?.giveUp();
          if (rest && rest.length > 0) this.pending?.[stream](rest);
        }
        void Promise.all([once(this.child.stdout, 'close'), once(this.child.stderr, 'close')]).catch(() => undefined).then(() => resolveEnded());
      },
    };
    if (request.input !== '') writeFileSync(this.inputFile, request.input, { mode: 0o600 });
    writeFileSync(this.script, requestScript(request, request.input !== '' ? this.inputFile : undefined), { mode: 0o600 });
    this.hold(true);
    this.child.stdin.write(`${this.script}\n`);
    let released = false;
    return {
      started,
      group: this.group!,
      exited,
      outputEnded,
      release: () => {
        if (released) return;
        released = true;
        this.hold(false);
        this.pending = undefined;
        this.markerSeen = undefined;
        done(this, !this.dead && exitSeen && markers === 2 && this.intact());
      },
    };
  }

  close(): void {
    // The group, and (while `unshare` still runs, so the pid is still its) the namespace's first
    // process by its pid: that ends the namespace even if a command changed its group or its
    // parent-death signal.
    const init = this.dead ? undefined : (this.initPid ?? undefined);
    this.dead = true;
    for (const target of [this.child.pid === undefined ? undefined : -this.child.pid, init]) {
      if (target === undefined) continue;
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    this.child.stdin.destroy();
    this.child.stdout.destroy();
    this.child.stderr.destroy();
    (this.child.stdio[3] as Readable).destroy();
    this.child.unref();
  }
}

function signalName(number: number): NodeJS.Signals | undefined {
  const entry = Object.entries(os.constants.signals).find(([, value]) => value === number);
  return entry?.[0] as NodeJS.Signals | undefined;
}

/** Launchers kept for the next command, by kind: one per command running at once (WORKER_CONCURRENCY is at most 64). */
const MAX_IDLE = 64;
const idle = new Map<string, Launcher[]>();
let bashPath: string | null | undefined;

function findBash(): string | undefined {
  if (bashPath === undefined) {
    bashPath = null;
    for (const candidate of ['/bin/bash', '/usr/bin/bash']) {
      try {
        accessSync(candidate, constants.X_OK);
        bashPath = candidate;
        break;
      } catch {
        // Next.
      }
    }
  }
  return bashPath ?? undefined;
}

/**
 * Why launchers cannot work here, or undefined when they can: checked once at a worker's start-up,
 * so the log says when every command will be forked from the worker instead.
 */
export function launcherUnavailable(): string | undefined {
  const bash = findBash();
  if (!bash) return 'no bash in /bin or /usr/bin';
  const result = spawnSync(bash, ['--norc', '--noprofile', '-c', '[[ -n $SRANDOM ]]'], { env: {}, stdio: 'ignore', timeout: 10_000 });
  if (result.error) return `${bash}: ${result.error.message}`;
  return result.status === 0 ? undefined : `${bash} is older than 5.1 (no $SRANDOM)`;
}

/** Set once a launcher would not start here: every command is spawned directly from then on. */
let disabled = false;

/**
 * Starts `request` from a launcher of `kind`, or returns undefined when it cannot be (no bash, an
 * environment bash would change, a launcher that would not start): the caller spawns it itself then.
 */
export async function launch(kind: LauncherKind, request: LaunchRequest, stdout: (chunk: Buffer) => void, stderr: (chunk: Buffer) => void): Promise<LaunchedCommand | undefined> {
  if (disabled || !expressible(request)) return undefined;
  const key = kind.unshare.join(' ');
  const pool = idle.get(key) ?? [];
  idle.set(key, pool);
  let launcher = pool.pop();
  while (launcher?.dead) launcher = pool.pop();
  if (!launcher) {
    const bash = findBash();
    if (!bash) return undefined;
    launcher = new Launcher(bash, kind);
    try {
      await launcher.ready;
    } catch {
      // It would not start here: stop trying for the rest of this process's life.
      disabled = true;
      launcher.close();
      return undefined;
    }
  }
  return launcher.start(request, stdout, stderr, (used, reusable) => {
    if (reusable && pool.length < MAX_IDLE) pool.push(used);
    else used.close();
  });
}

/** Closes the idle launchers (a process that exits closes them anyway: their stdin ends). */
export function closeLaunchers(): void {
  for (const pool of idle.values()) for (const launcher of pool.splice(0)) launcher.close();
}
