import { spawn } from 'node:child_process';
import type { Logger } from '../shared/logger.ts';

/**
 * Tells a process manager how the service is doing: systemd through its notify socket
 * (`Type=notify`: READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1) and pm2 through the IPC
 * channel it opens for `wait_ready` (`process.send('ready')`).
 *
 * Why `systemd-notify` and not a socket of our own: `NOTIFY_SOCKET` is an AF_UNIX datagram socket
 * and Node's `dgram` has none. The npm ways (`unix-dgram`, `sd-notify`) are native addons, built
 * per Node ABI: an install built against another Node's headers fails to load, and a failed load
 * would silently lose READY=1 (systemd then kills the service at TimeoutStartSec). The
 * `systemd-notify` CLI ships with systemd itself, so it is present wherever the socket is, and
 * since systemd 246 it ends each message with a barrier (it waits until PID 1 has read it), so the
 * old race of a short-lived sender is gone. `--pid` names the supervisor as the sender; the unit
 * also sets `NotifyAccess=all` for systems where that credential is refused. Messages are sent one
 * process after another, in order, never blocking the event loop.
 */

export interface ServiceNotifier {
  /** Every child is up: READY=1 (and pm2's `ready`, once). */
  ready(status: string): void;
  status(status: string): void;
  reloading(): void;
  stopping(status: string): void;
  /** Starts WATCHDOG=1 pings every half WATCHDOG_USEC while `healthy()` says so. */
  startWatchdog(healthy: () => boolean): void;
  /** Waits for the messages queued so far (at most a few seconds). */
  flush(): Promise<void>;
}

const SEND_TIMEOUT_MS = 10_000;

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim().slice(0, 200);
}

class SystemdNotify {
  private chain: Promise<void> = Promise.resolve();
  private warned = false;
  private readonly socket: string;
  private readonly logger: Logger;
  constructor(socket: string, logger: Logger) {
    this.socket = socket;
    this.logger = logger;
  }

  send(assignments: string[]): void {
    this.chain = this.chain.then(() => this.run(assignments));
  }

  flush(): Promise<void> {
    return this.chain;
  }

  private run(assignments: string[]): Promise<void> {
    return new Promise((resolve) => {
      const child = spawn('systemd-notify', [`--pid=${process.pid}`, ...assignments], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NOTIFY_SOCKET: this.socket },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      const timer = setTimeout(() => child.kill('SIGKILL'), SEND_TIMEOUT_MS);
      const finish = (problem?: string) => {
        clearTimeout(timer);
        if (problem && !this.warned) {
          this.warned = true;
          this.logger.warn({ notifySocket: this.socket, problem }, 'cannot notify systemd (is systemd-notify installed?); under Type=notify the unit will time out');
        } else if (problem) {
          this.logger.debug({ problem, assignments }, 'systemd notification failed');
        }
        resolve();
      };
      child.on('error', (error) => finish(error.message));
      child.on('exit', (code, signal) => finish(code === 0 ? undefined : `systemd-notify ${assignments.join(' ')}: ${signal ?? `exit ${code}`} ${oneLine(stderr)}`));
    });
  }
}

export function createNotifier(logger: Logger, env: NodeJS.ProcessEnv = process.env): ServiceNotifier {
  const socket = env.NOTIFY_SOCKET;
  const systemd = socket ? new SystemdNotify(socket, logger) : undefined;
  const watchdogUsec = Number(env.WATCHDOG_USEC);
  const watchdogForUs = Number.isFinite(watchdogUsec) && watchdogUsec > 0 && (!env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid);
  // pm2 (fork mode) and any other parent that opened an IPC channel and waits for 'ready'.
  const ipcParent = typeof process.send === 'function';
  let toldParent = false;
  let stopped = false;
  let watchdog: NodeJS.Timeout | undefined;

  if (systemd) logger.debug({ notifySocket: socket, watchdogUsec: watchdogForUs ? watchdogUsec : undefined }, 'systemd notify socket found');
  return {
    ready(status) {
      if (stopped) return;
      systemd?.send(['READY=1', `STATUS=${oneLine(status)}`]);
      if (ipcParent && !toldParent && process.connected) {
        toldParent = true;
        process.send!('ready');
      }
    },
    status(status) {
      if (!stopped) systemd?.send([`STATUS=${oneLine(status)}`]);
    },
    reloading() {
      if (!stopped) systemd?.send(['RELOADING=1', 'STATUS=reloading: replacing children one at a time']);
    },
    stopping(status) {
      if (stopped) return;
      stopped = true;
      clearInterval(watchdog);
      systemd?.send(['STOPPING=1', `STATUS=${oneLine(status)}`]);
    },
    startWatchdog(healthy) {
      if (!systemd || !watchdogForUs || watchdog) return;
      const everyMs = Math.max(100, Math.floor(watchdogUsec / 2000));
      logger.info({ everyMs }, 'systemd watchdog: pinging while the children are healthy');
      const ping = () => {
        if (!stopped && healthy()) systemd.send(['WATCHDOG=1']);
      };
      ping();
      watchdog = setInterval(ping, everyMs);
      watchdog.unref();
    },
    async flush() {
      await Promise.race([systemd?.flush(), new Promise((resolve) => setTimeout(resolve, SEND_TIMEOUT_MS).unref())]);
    },
  };
}
