import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { MetricValue } from '../shared/db/results.ts';

/**
 * Results computed while the database was away. The job's branch is already pushed and its
 * evaluation done: losing that work to an outage would be a waste, so the result is written to a
 * file under the data directory and recorded when the database is back, exactly once (recording
 * locks the job's row and records only a job that has not finished; the file is removed after).
 *
 * Each file is written to a temporary name, flushed to disk and renamed into place, so a reader
 * never sees half a result, whatever kills the writer.
 */

export interface SpooledResult {
  readonly version: 1;
  readonly jobId: string;
  readonly experimentId: string;
  readonly kind: string;
  readonly baseCommit: string;
  /** The queue job the attempt ran on. */
  readonly queueJobId: string;
  readonly queueRetryCount: number;
  readonly commit: string;
  readonly branch: string | null;
  readonly author: string;
  readonly message: string;
  readonly files: readonly string[];
  readonly summary: string;
  readonly metrics: readonly MetricValue[];
  readonly artifacts: Readonly<Record<string, string>>;
  readonly spooledAt: string;
}

/** Thrown when a job's result is safe on disk but could not be recorded before the worker had to stop. */
export class ResultSpooled extends Error {
  override readonly name = 'ResultSpooled';
}

export function spoolDirectory(dataDir: string, namespace: string): string {
  return path.join(dataDir, 'spool', namespace);
}

export class ResultSpool {
  readonly directory: string;

  constructor(directory: string) {
    this.directory = directory;
  }

  private file(jobId: string): string {
    return path.join(this.directory, `${jobId}.json`);
  }

  async write(result: SpooledResult): Promise<string> {
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    const target = this.file(result.jobId);
    const temporary = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const handle = await open(temporary, 'w', 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(result)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, target);
    // The rename itself reaches the disk with the directory's own flush.
    const directory = await open(this.directory, 'r');
    await directory.sync().finally(() => directory.close());
    return target;
  }

  /** Every complete spooled result (temporary files of a writer that died are skipped). */
  async list(): Promise<SpooledResult[]> {
    if (!existsSync(this.directory)) return [];
    const results: SpooledResult[] = [];
    for (const name of (await readdir(this.directory)).sort()) {
      if (!name.endsWith('.json')) continue;
      try {
        const parsed = JSON.parse(await readFile(path.join(this.directory, name), 'utf8')) as SpooledResult;
        if (parsed.version === 1 && typeof parsed.jobId === 'string') results.push(parsed);
      } catch {
        // Unreadable: left for a person to look at rather than guessed at.
      }
    }
    return results;
  }

  async remove(jobId: string): Promise<void> {
    await rm(this.file(jobId), { force: true });
  }
}
