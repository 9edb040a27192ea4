import { createInterface } from 'node:readline/promises';
import { migrate } from '../shared/db/migrations/index.ts';
import { createPool, withTransaction } from '../shared/db/pool.ts';
import { experimentFootprint, wipeExperiment } from '../shared/db/rebuild.ts';
import { embeddedDatabaseDirectory, runningEmbeddedUrl, startEmbeddedDatabase, type EmbeddedDatabase } from '../shared/embedded-database.ts';
import { UserError } from '../shared/errors.ts';
import type { Settings } from '../shared/settings/index.ts';
import { rebuildFromNotes } from '../scheduler/notes-rebuild.ts';

export interface RebuildCommandOptions {
  /** Replace what the database holds of the experiment (after a confirmation). */
  readonly force: boolean;
  /** Skip the confirmation (scripts). */
  readonly yes: boolean;
  readonly out?: NodeJS.WritableStream;
  /** Answers the confirmation; defaults to a prompt on the terminal. */
  readonly confirm?: (question: string) => Promise<string>;
}

async function ask(question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await rl.question(question);
  } finally {
    rl.close();
  }
}

/**
 * `loreley rebuild`: restores the experiment from its remote's git notes into an empty database
 * (see src/scheduler/notes-rebuild.ts). With no DATABASE_URL it starts the embedded server itself,
 * which must not be running under a supervisor. A database that already holds the experiment is
 * replaced only with --force, after the user types the experiment's name (or with --yes).
 */
export async function runRebuild(settings: Settings, options: RebuildCommandOptions): Promise<void> {
  const out = options.out ?? process.stdout;
  const say = (line: string) => out.write(`${line}\n`);
  let embedded: EmbeddedDatabase | undefined;
  let url = settings.database.url;
  if (!url) {
    const directory = embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace);
    if (runningEmbeddedUrl(directory)) throw new UserError('a supervisor is running this experiment\'s embedded database: stop it before rebuilding');
    say(`starting the embedded PostgreSQL in ${directory}`);
    embedded = await startEmbeddedDatabase({ directory });
    url = embedded.url;
  }
  const pool = createPool({ url, settings: settings.database, applicationName: 'loreley-rebuild', max: 2 });
  // The replay commits once per candidate, as ingestion does; waiting for each WAL flush would make
  // it disk-bound. A crash mid-rebuild loses nothing that a second `rebuild --force` cannot redo.
  pool.on('connect', (client) => void client.query('SET synchronous_commit = off').catch(() => undefined));
  try {
    await migrate(pool, settings.database.schema);
    const footprint = await experimentFootprint(pool, settings.experiment.uuid);
    if (footprint.jobs > 0 || footprint.rootCommit !== null) {
      const held = `the database already holds experiment ${settings.experiment.raw} (${footprint.jobs} jobs, ${footprint.elites} elites)`;
      if (!options.force) throw new UserError(`${held}: 'loreley rebuild --force' replaces it with what the remote's notes record`);
      if (!options.yes) {
        if (!options.confirm && !process.stdin.isTTY) throw new UserError(`${held}: confirm with --yes when not on a terminal`);
        const answer = await (options.confirm ?? ask)(`${held}. Stop every supervisor of it first. Type the experiment id (${settings.experiment.raw}) to replace it: `);
        if (answer.trim() !== settings.experiment.raw) throw new UserError('not confirmed: nothing changed');
      }
      await withTransaction(pool, (client) => wipeExperiment(client, settings.experiment.uuid, settings.database.bossSchema, settings.queue.name));
      say(`removed experiment ${settings.experiment.raw} from the database`);
    }
    const started = performance.now();
    const result = await rebuildFromNotes({ ...settings, database: { ...settings.database, url } }, pool, say);
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    say(`rebuilt ${settings.experiment.raw} in ${seconds} s: ${result.candidates} candidates, ${result.elites} elites, root ${result.root.slice(0, 12)}`);
    if (result.best) say(`best ${settings.archive.fitnessMetric} ${result.best.fitness} at ${result.best.commit}`);
    if (!result.samplerRestored) say('no sampler state in the notes: sampling continues from the seed');
    if (result.refits === null) say('the notes record no behaviour models (written by an older Loreley): the replay refitted its own, so cells may differ from the run\'s');
    if (result.differing > 0) say(`warning: ${result.differing} replayed ingestion(s) came out differently from their notes (settings changed?)`);
    say('start loreley-supervisor to continue the run');
  } finally {
    await pool.end().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
  }
}
