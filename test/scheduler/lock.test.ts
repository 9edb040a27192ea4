import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { acquireSchedulerLock } from '../../src/scheduler/lock.ts';
import { stopTestServer } from '../helpers/database.ts';
import { waitFor } from '../helpers/processes.ts';
import { createFixture, type Fixture } from './fixture.ts';

after(() => stopTestServer());

async function holderPid(fixture: Fixture): Promise<number | undefined> {
  const { rows } = await fixture.pool.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted`);
  return rows[0]?.pid;
}

describe('scheduler lock', () => {
  let fixture: Fixture;
  before(async () => {
    fixture = await createFixture();
  });
  after(() => fixture.close());

  test('a standby waits, then takes over when the holder’s connection dies', async () => {
    const experiment = fixture.settings.experiment.uuid;
    const stop = new AbortController();
    const holder = await acquireSchedulerLock(fixture.pool, experiment, stop.signal, { pollIntervalMs: 50 });
    let standingBy = false;
    let acquired = false;
    const standby = acquireSchedulerLock(fixture.pool, experiment, stop.signal, { pollIntervalMs: 50, onStandby: () => (standingBy = true) })
      .then((lock) => {
        acquired = true;
        return lock;
      });
    // onStandby is called after a try found the lock taken.
    await waitFor('the second scheduler to stand by', () => standingBy);
    assert.equal(standingBy, true);
    assert.equal(acquired, false, 'only one scheduler holds the lock');

    const pid = await holderPid(fixture);
    assert.ok(pid);
    await fixture.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    const lock = await standby;
    assert.equal(acquired, true);
    await waitFor('the old holder to learn it lost the lock', () => holder.lost.aborted, 5000, 10);
    assert.equal(holder.lost.aborted, true, 'the old holder learns it lost the lock');
    assert.notEqual(await holderPid(fixture), pid);

    // Another experiment has a lock of its own.
    const other = await acquireSchedulerLock(fixture.pool, '00000000-0000-0000-0000-000000000001', stop.signal, { pollIntervalMs: 50 });
    await other.release();
    await lock.release();
    await holder.release();
    assert.equal(await holderPid(fixture), undefined, 'released');
  });

  test('a waiting standby stops when its signal aborts', async () => {
    const experiment = fixture.settings.experiment.uuid;
    const holder = await acquireSchedulerLock(fixture.pool, experiment, new AbortController().signal, { pollIntervalMs: 50 });
    const stop = new AbortController();
    let standingBy = false;
    const waiting = acquireSchedulerLock(fixture.pool, experiment, stop.signal, { pollIntervalMs: 50, onStandby: () => (standingBy = true) });
    await waitFor('the standby to be waiting', () => standingBy);
    stop.abort(new Error('draining'));
    await assert.rejects(waiting, /draining|aborted/);
    await holder.release();
    const { rows } = await fixture.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%scheduler-lock'`);
    assert.equal(rows[0].n, 0, 'no lock connection is left open');
  });
});
