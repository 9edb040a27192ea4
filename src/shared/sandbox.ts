import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { ConfigurationError } from './errors.ts';
import type { LauncherKind } from './launcher.ts';
import type { SandboxSettings } from './settings/index.ts';

/**
 * How an agent or evaluator command is contained: decided once at start-up, then applied to every
 * command by wrapping its argument list.
 *
 * The mechanism is a PID namespace, for one reason: when the namespace's first process dies the
 * kernel kills every other process in it, including one that called `setsid` or double-forked
 * to leave the command's process group. A process group alone cannot promise that; a cgroup can,
 * but only where the worker may write to the cgroup tree (root, or systemd `Delegate=yes`), and
 * a subreaper needs a native addon. A PID namespace also gives the command a `/proc` of its own,
 * so it cannot read the worker's `/proc/<pid>/environ` or `cmdline`.
 *
 * - `bubblewrap` (WORKER_SANDBOX=namespace, the default where `bwrap` works): the PID namespace
 *   plus the sandbox: the filesystem read-only except the job's worktree, its meta directory
 *   (context, prompt, TMPDIR) and WORKER_SANDBOX_WRITABLE; the evaluator's own files read-only
 *   even inside a writable directory; the experiment's `.env` and the embedded database hidden;
 *   no network unless WORKER_SANDBOX_NETWORK=true (or a coding-agent CLI, which needs its API);
 *   `--die-with-parent`, so even a SIGKILLed worker takes its commands with it.
 * - `pid-namespace` (no sandbox, `unshare --pid --fork --kill-child --mount-proc` works): every
 *   process dies with the command, and `/proc` is the command's own; nothing else is restricted.
 * - `process-group`: the command's process group is signalled; a process that left the group
 *   survives. Used when neither works (a container without user namespaces), with a warning.
 *
 * In every case the command leads a process group of its own (the wrapper), so TERM and KILL to
 * that group reach it, and the supervisor can end it by group id if the worker is killed.
 */

export type Mechanism = 'bubblewrap' | 'pid-namespace' | 'process-group';

export interface Containment {
  readonly mechanism: Mechanism;
  /** The filesystem and network restrictions apply (bubblewrap). */
  readonly sandboxed: boolean;
  /** The `unshare` flags that worked here (pid-namespace only). */
  readonly unshareFlags: readonly string[];
  /** One line for each protection that is lost on this machine; logged once at start-up. */
  readonly warnings: readonly string[];
}

/** What one command may touch. Paths that do not exist are skipped. */
export interface CommandScope {
  readonly cwd: string;
  /** Writable (the worktree, the job's meta directory, WORKER_SANDBOX_WRITABLE). */
  readonly writable: readonly string[];
  /** Read-only even inside a writable directory (the evaluator's files). */
  readonly readOnly: readonly string[];
  /** Hidden: an empty file or directory in their place (`.env`, the embedded database). */
  readonly hidden: readonly string[];
  readonly network: boolean;
}

export const PROCESS_GROUP_ONLY: Containment = Object.freeze({ mechanism: 'process-group', sandboxed: false, unshareFlags: [], warnings: [] });

const BWRAP_NAMESPACES = ['--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try', '--die-with-parent'];
const UNSHARE_PID = ['--pid', '--fork', '--kill-child', '--mount-proc'];

function probe(argv: readonly string[]): string | undefined {
  const result = spawnSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000, encoding: 'utf8' });
  if (result.error) return (result.error as NodeJS.ErrnoException).code === 'ENOENT' ? `${argv[0]} is not installed` : result.error.message;
  if (result.status !== 0) return (result.stderr || `exit ${result.status ?? result.signal}`).trim().split('\n').pop();
  return undefined;
}

/** The `unshare` flags that give a PID namespace here (as root, or through a user namespace). */
function unshareFlags(): { flags?: string[]; why?: string } {
  let why: string | undefined;
  for (const flags of [UNSHARE_PID, ['--user', '--map-root-user', ...UNSHARE_PID]]) {
    why = probe(['unshare', ...flags, '--', 'true']);
    if (why === undefined) return { flags };
  }
  return { why };
}

/**
 * Finds out once what this machine allows and picks the mechanism. A sandbox or PID namespace
 * that was asked for explicitly but does not work is a configuration error; the default falls
 * back with a warning naming what is lost.
 */
export function detectContainment(settings: SandboxSettings): Containment {
  const warnings: string[] = [];
  if (settings.mode === 'namespace') {
    const why = probe(['bwrap', '--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--unshare-net', ...BWRAP_NAMESPACES, '--', 'true']);
    if (why === undefined) return Object.freeze({ mechanism: 'bubblewrap', sandboxed: true, unshareFlags: [], warnings });
    if (settings.required) throw new ConfigurationError(`WORKER_SANDBOX=namespace needs bubblewrap: ${why} (install it, e.g. apt-get install bubblewrap, or set WORKER_SANDBOX=none)`);
    warnings.push(`no sandbox (bubblewrap: ${why}): agent and evaluator commands can write outside their worktree, reach the network and change the evaluator's files (a change stops the worker)`);
  }
  if (settings.containment !== 'process-group') {
    const { flags, why } = unshareFlags();
    if (flags) return Object.freeze({ mechanism: 'pid-namespace', sandboxed: false, unshareFlags: flags, warnings });
    if (settings.containment === 'pid-namespace') throw new ConfigurationError(`WORKER_CONTAINMENT=pid-namespace does not work here: unshare: ${why}`);
    warnings.push(`no PID namespace (unshare: ${why}): a process a command starts in a new session (setsid) can outlive the command`);
  }
  return Object.freeze({ ...PROCESS_GROUP_ONLY, warnings });
}

function bwrapArgs(scope: CommandScope): string[] {
  const args = ['--ro-bind', '/', '/', '--dev', '/dev', '--tmpfs', '/dev/shm', '--proc', '/proc', ...BWRAP_NAMESPACES];
  if (!scope.network) args.push('--unshare-net');
  for (const dir of scope.writable) if (existsSync(dir)) args.push('--bind', dir, dir);
  // Later mounts win: a read-only file inside a writable directory stays read-only.
  for (const file of scope.readOnly) if (existsSync(file)) args.push('--ro-bind', file, file);
  for (const hidden of scope.hidden) {
    if (existsSync(hidden)) args.push(...(isDirectory(hidden) ? ['--tmpfs', hidden] : ['--ro-bind', '/dev/null', hidden]));
  }
  args.push('--chdir', scope.cwd, '--');
  return args;
}

function isDirectory(file: string): boolean {
  try {
    return statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** The argument list that runs `argv` contained as `containment` says, within `scope`. */
export function containedArgv(containment: Containment, argv: readonly string[], scope: CommandScope): string[] {
  switch (containment.mechanism) {
    case 'bubblewrap':
      return ['bwrap', ...bwrapArgs(scope), ...argv];
    case 'pid-namespace':
      return ['unshare', ...containment.unshareFlags, '--', ...argv];
    case 'process-group':
      return [...argv];
  }
}

/**
 * How a command is started without forking the worker (src/shared/launcher.ts): with pid-namespace
 * containment, from a launcher that is itself the PID namespace. Bubblewrap commands are spawned
 * directly: `bwrap` itself costs ~5 ms of CPU per command here (its namespaces made and torn down,
 * part of it in its namespace's init, which outlives `bwrap` and is reaped by the system's init, not
 * by the worker), and from a launcher (tried: a `bwrap --die-with-parent --unshare-pid` namespace
 * around bash, each command a `bwrap` inside it, all of that counted) it cost no less. Spawned, its
 * `--die-with-parent` ends it with a SIGKILLed worker. Process-group containment has no namespace
 * to empty between commands.
 */
export function launcherFor(containment: Containment): LauncherKind | undefined {
  return containment.mechanism === 'pid-namespace' ? { unshare: containment.unshareFlags } : undefined;
}
