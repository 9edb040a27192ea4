import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { withFileLock } from '../../src/worker/clone-lock.ts';
import { tempDir } from '../helpers/git.ts';
import { deadPid } from '../helpers/processes.ts';

/** The base clone's lock file: no database, and it dies with its holder. */

test('creates its parent directory (the clone under LORELEY_DATA_DIR/repos/ does not exist yet)', async () => {
  const file = path.join(tempDir(), 'data', 'repos', 'ns.lock');
  assert.equal(await withFileLock(file, async () => existsSync(file)), true);
  assert.equal(existsSync(file), false, 'released');
});

test('holders never overlap', async () => {
  const file = path.join(tempDir(), 'clone.lock');
  let inside = 0;
  let most = 0;
  await Promise.all(
    Array.from({ length: 8 }, () =>
      withFileLock(file, async () => {
        inside += 1;
        most = Math.max(most, inside);
        await sleep(5);
        inside -= 1;
      }),
    ),
  );
  assert.equal(most, 1);
});

test('a lock whose holder died (SIGKILL) is broken by the next taker; a live holder\'s is not', async () => {
  const file = path.join(tempDir(), 'clone.lock');
  writeFileSync(file, JSON.stringify({ host: os.hostname(), pid: await deadPid(), token: 'x' }));
  const started = performance.now();
  await withFileLock(file, async () => undefined);
  assert.ok(performance.now() - started < 1000, 'taken at once');

  writeFileSync(file, JSON.stringify({ host: os.hostname(), pid: process.pid, token: 'someone-else' }));
  await assert.rejects(withFileLock(file, async () => undefined, { timeoutMs: 200 }), /is held by .*for over 0 s/);
  assert.ok(existsSync(file), 'a live holder keeps its lock');
});
