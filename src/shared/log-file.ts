import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * A process's JSONL log file, rotated by size: `<directory>/<name>.<N>.jsonl`, N from 1. A process
 * continues in the highest-numbered file of its directory (a restarted child appends where the
 * last one stopped), and moves to N + 1 once a write takes the file to `maxBytes` or past it.
 *
 * Every write is one synchronous `write(2)` to a file opened for appending: a line logged just
 * before `process.exit()`, an uncaught exception or a SIGKILL is on disk, and there is no buffer to
 * flush. This is what pino-roll did with `sync: true`, without pulling date-fns (300 modules,
 * ~45 ms of CPU and ~10 MB of memory in every process) in for a feature (dated names) no one uses.
 */
export class RollingLogFile {
  private readonly directory: string;
  private readonly name: string;
  private readonly maxBytes: number;
  private number: number;
  private fd: number;
  private size: number;

  constructor(options: { readonly directory: string; readonly name: string; readonly maxBytes: number }) {
    this.directory = options.directory;
    this.name = options.name;
    this.maxBytes = Math.max(1, options.maxBytes);
    mkdirSync(this.directory, { recursive: true });
    this.number = this.lastNumber();
    this.fd = openSync(this.file(), 'a');
    this.size = fstatSync(this.fd).size;
  }

  /** The file lines go to now. */
  file(): string {
    return path.join(this.directory, `${this.name}.${this.number}.jsonl`);
  }

  /** pino's destination interface: one serialised line, newline included. */
  write(line: string): void {
    const buffer = Buffer.from(line);
    let offset = 0;
    // A regular file takes the whole buffer in one call; the loop is for the rare short write.
    while (offset < buffer.length) offset += writeSync(this.fd, buffer, offset);
    this.size += buffer.length;
    if (this.size >= this.maxBytes) this.rotate();
  }

  /** Nothing is buffered; kept so callers can treat this like any pino destination. */
  flushSync(): void {}

  private rotate(): void {
    const next = this.number + 1;
    const fd = openSync(path.join(this.directory, `${this.name}.${next}.jsonl`), 'a');
    closeSync(this.fd);
    this.fd = fd;
    this.number = next;
    this.size = fstatSync(fd).size;
  }

  private lastNumber(): number {
    const pattern = new RegExp(`^${this.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.jsonl$`);
    let highest = 1;
    for (const entry of readdirSync(this.directory)) {
      const match = pattern.exec(entry);
      if (match) highest = Math.max(highest, Number(match[1]));
    }
    return highest;
  }
}
