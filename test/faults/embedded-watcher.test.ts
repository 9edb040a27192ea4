import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, test } from 'node:test';
import pg from 'pg';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/shared/embedded-database.ts';
import { pidAlive, processesMentioning, waitFor } from '../helpers/processes.ts';

/**
 * The embedded server's watcher stops the server of an owner that died, and only that server: a
 * watcher that wakes late (here: stopped with SIGSTOP until a new owner has started the cluster
 * again) must leave the new owner's server running. `pg_ctl stop -D <cluster>` would not.
 */

const MODULE = pathToFileURL(path.resolve(import.meta.dirname, '../../src/shared/embedded-database.ts')).href;
const directory = mkdtempSync(path.join(os.tmpdir(), 'loreley-watcher-'));
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  rmSync(directory, { recursive: true, force: true });
});

function dataDir(): string {
  const relocated = path.join(directory, 'cluster-location');
  const cluster = existsSync(relocated) ? readFileSync(relocated, 'utf8').trim() : directory;
  return path.join(cluster, 'data');
}

function postmasterPid(): number | undefined {
  try {
    return Number(readFileSync(path.join(dataDir(), 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
}

test('a late watcher of a killed owner leaves the next owner\'s server running', async () => {
  // The first owner is a process of its own, so it can be SIGKILLed for real.
  const script = `const { startEmbeddedDatabase } = await import(${JSON.stringify(MODULE)});
await startEmbeddedDatabase({ directory: ${JSON.stringify(directory)} });
process.stdout.write('started\\n');
setInterval(() => undefined, 1000);`;
  const first = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => void (first.exitCode === null && first.signalCode === null && first.kill('SIGKILL')));
  let output = '';
  first.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor('the first owner to start its server', () => output.includes('started'), 120_000, 50);
  const firstServer = postmasterPid();
  assert.ok(firstServer && pidAlive(firstServer), 'the first server runs');

  const watchers = processesMentioning(dataDir()).filter((p) => p.cmdline.startsWith('/bin/sh -c while read'));
  assert.equal(watchers.length, 1, `one watcher: ${JSON.stringify(watchers)}`);
  const watcher = watchers[0].pid;
  process.kill(watcher, 'SIGSTOP');
  // Killed at the end only if it was never seen to exit: its pid may belong to another process by then.
  let watcherExited = false;
  cleanups.push(() => void (!watcherExited && pidAlive(watcher) && process.kill(watcher, 'SIGKILL')));

  // Reaped, not only dead: a zombie still answers kill(pid, 0), and the claim would see an owner.
  const exited = new Promise((resolve) => first.once('exit', resolve));
  process.kill(first.pid!, 'SIGKILL');
  await exited;
  assert.ok(pidAlive(firstServer), 'the stopped watcher has not acted yet');

  // The next owner takes the cluster over: it stops the orphaned server and starts its own.
  const second: EmbeddedDatabase = await startEmbeddedDatabase({ directory });
  cleanups.push(() => second.stop());
  const secondServer = postmasterPid();
  assert.ok(secondServer && secondServer !== firstServer && pidAlive(secondServer), 'the second server runs');

  process.kill(watcher, 'SIGCONT');
  await waitFor('the late watcher to finish', () => !pidAlive(watcher), 15_000, 20);
  watcherExited = true;

  assert.ok(pidAlive(secondServer), 'the new owner\'s server still runs');
  const client = new pg.Client({ connectionString: second.url });
  await client.connect();
  try {
    assert.equal((await client.query('select 1 as one')).rows[0].one, 1);
  } finally {
    await client.end();
  }
});

