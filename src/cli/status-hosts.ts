/**
 * The processes part of `loreley status`: one line per process, grouped under a line per host
 * when the experiment runs on several. Ages are computed against the database's clock (`now` read
 * from the server), so a host whose clock is off still shows the truth.
 */

export interface ProcessView {
  readonly host: string;
  readonly workerId: string;
  readonly role: string;
  readonly pid: number;
  readonly state: string;
  readonly currentJobId: string | null;
  readonly lastHeartbeat: Date | string;
}

export interface HostView {
  readonly host: string;
  readonly machine: string;
  readonly pid: number;
  readonly state: string;
  readonly lastHeartbeat: Date | string;
}

export function age(from: Date | string, now: Date): string {
  const seconds = Math.max(0, Math.round((now.getTime() - new Date(from).getTime()) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  return `${Math.round(seconds / 3600)}h`;
}

function processLine(w: ProcessView, now: Date): string {
  return `  ${w.host}/${w.workerId.padEnd(16)} ${w.role.padEnd(9)} pid ${String(w.pid).padEnd(7)} ${w.state.padEnd(8)} ${w.currentJobId ? `job ${w.currentJobId.slice(0, 8)} ` : ''}seen ${age(w.lastHeartbeat, now)} ago`;
}

export function formatProcesses(workers: readonly ProcessView[], hosts: readonly HostView[], now: Date): string[] {
  const names = [...new Set([...hosts.map((h) => h.host), ...workers.map((w) => w.host)])].sort();
  if (names.length <= 1 && hosts.length <= 1) {
    const lines = workers.map((w) => processLine(w, now));
    return lines.length > 0 ? lines : ['  (none reported yet)'];
  }
  const lines: string[] = [];
  for (const name of names) {
    const h = hosts.find((candidate) => candidate.host === name);
    const own = workers.filter((w) => w.host === name).sort((x, y) => x.workerId.localeCompare(y.workerId));
    lines.push(h
      ? `  host ${name}: supervisor pid ${h.pid} on ${h.machine}, ${h.state}, seen ${age(h.lastHeartbeat, now)} ago`
      : `  host ${name}: no supervisor`);
    lines.push(...own.map((w) => processLine(w, now)));
  }
  return lines;
}
