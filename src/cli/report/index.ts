import { spawn } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createPool } from '../../shared/db/pool.ts';
import { UserError } from '../../shared/errors.ts';
import type { ReadOnlySettings } from '../../shared/settings/index.ts';
import { defaultReportFile } from '../../supervisor/observer.ts';
import { withStatusDatabase } from '../status.ts';
import { collectReport } from './data.ts';
import { renderReport } from './html.ts';

/**
 * `loreley report [--out FILE] [--open] [--dims i,j]`: one self-contained HTML file about the run,
 * readable while it runs and after it stopped (the embedded database is started for the command
 * when no supervisor runs, as for `loreley status`).
 */

export interface ReportOptions {
  readonly out?: string;
  readonly open: boolean;
  readonly dims?: readonly [number, number];
}

export function parseDims(value: string): [number, number] {
  const match = /^(\d+)\s*,\s*(\d+)$/.exec(value.trim());
  if (!match) throw new UserError(`--dims ${JSON.stringify(value)}: expected two descriptor dimensions such as 0,1`);
  return [Number(match[1]), Number(match[2])];
}

function openInBrowser(file: string): void {
  const command = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  const child = spawn(command, [file], { stdio: 'ignore', detached: true });
  child.on('error', () => process.stderr.write(`loreley report: could not run ${command}; open ${file} in a browser\n`));
  child.unref();
}

export async function runReport(settings: ReadOnlySettings, options: ReportOptions): Promise<string> {
  const file = path.resolve(options.out ?? defaultReportFile(settings));
  const html = await withStatusDatabase(settings, async (url) => {
    const pool = createPool({ url, settings: settings.database, applicationName: 'loreley-report', max: 2 });
    try {
      return renderReport(await collectReport(pool, settings, { dims: options.dims }));
    } finally {
      await pool.end().catch(() => undefined);
    }
  });
  mkdirSync(path.dirname(file), { recursive: true });
  // Written aside and renamed: a browser reloading the page never sees half a file.
  const partial = `${file}.partial`;
  writeFileSync(partial, html);
  renameSync(partial, file);
  if (options.open) openInBrowser(file);
  return file;
}
