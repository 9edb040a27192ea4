import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import { JobWaker, WakePolicy, type WakeTarget } from '../../src/supervisor/job-wake.ts';
import type { SlotState, SlotView } from '../../src/supervisor/supervisor.ts';

/**
 * Which worker the supervisor wakes for a sent job, on its own: the policy is told the clock, and
 * the waker drives a stand-in for the supervisor's slot table (its IPC is covered with real
 * processes in job-wake.test.ts).
 */

describe('WakePolicy', () => {
  test('picks the idle worker woken longest ago, never-woken ones first, in the given order', () => {
    const policy = new WakePolicy();
    assert.equal(policy.pick([]), undefined);
    assert.equal(policy.pick(['w1', 'w2', 'w3']), 'w1');
    policy.woken('w1', 0);
    assert.equal(policy.pick(['w1', 'w2', 'w3']), 'w2');
    policy.woken('w2', 1);
    policy.woken('w3', 2);
    assert.equal(policy.pick(['w1', 'w2', 'w3']), 'w1');
    assert.equal(policy.pick(['w2', 'w3']), 'w2');
  });

  test('a worker turning busy soon after its wake chains to the next; later, or unwoken, or twice, it does not', () => {
    const policy = new WakePolicy(2000);
    assert.equal(policy.becameBusy('w1', 0), false, 'never woken');
    policy.woken('w1', 1000);
    assert.equal(policy.becameBusy('w1', 1500), true);
    assert.equal(policy.becameBusy('w1', 1600), false, 'one chain per wake');
    policy.woken('w2', 1000);
    assert.equal(policy.becameBusy('w2', 3500), false, 'past the window: its own poll found the job');
  });
});

class Slots extends EventEmitter implements WakeTarget {
  readonly views = new Map<string, SlotView>();
  readonly woken: string[] = [];
  refuse = new Set<string>();

  constructor(ids: readonly string[]) {
    super();
    for (const id of ids) this.views.set(id, { id, role: 'worker', state: 'idle', pid: 1, restarts: 0, jobId: null, rssBytes: undefined });
    this.views.set('scheduler0001', { id: 'scheduler0001', role: 'scheduler', state: 'idle', pid: 1, restarts: 0, jobId: null, rssBytes: undefined });
  }

  view(): SlotView[] {
    return [...this.views.values()];
  }

  wake(id: string): boolean {
    if (this.refuse.has(id)) return false;
    this.woken.push(id);
    return true;
  }

  set(id: string, state: SlotState, moreReady?: boolean): void {
    const view = { ...this.views.get(id)!, state, moreReady };
    this.views.set(id, view);
    this.emit('change', view);
  }
}

describe('JobWaker', () => {
  test('one wake per send, round-robin over idle workers, never the scheduler', () => {
    const slots = new Slots(['w1', 'w2', 'w3']);
    let now = 0;
    const waker = new JobWaker(slots, { now: () => now });
    for (let i = 0; i < 4; i += 1) {
      now += 10_000;
      waker.wakeOne();
    }
    assert.deepEqual(slots.woken, ['w1', 'w2', 'w3', 'w1']);
    assert.deepEqual(waker.counts, { wakes: 4, noneIdle: 0 });
  });

  test('a woken worker that finds a job wakes the next idle one; one that finds nothing ends it', () => {
    const slots = new Slots(['w1', 'w2', 'w3']);
    const waker = new JobWaker(slots, { now: () => 0 });
    waker.wakeOne();
    slots.set('w1', 'busy');
    assert.deepEqual(slots.woken, ['w1', 'w2'], 'w1 found a job: w2 is woken');
    slots.set('w2', 'busy');
    assert.deepEqual(slots.woken, ['w1', 'w2', 'w3']);
    // w3 finds nothing: it stays idle, nothing more happens.
    assert.equal(waker.counts.wakes, 3);
  });

  test('a woken worker whose fetch left nothing ready (a job sent alone) wakes nobody; one that left more does', () => {
    const slots = new Slots(['w1', 'w2', 'w3']);
    const waker = new JobWaker(slots, { now: () => 0 });
    waker.wakeOne();
    slots.set('w1', 'busy', false);
    assert.deepEqual(slots.woken, ['w1'], 'no empty fetch for w2');
    slots.set('w1', 'idle');
    waker.wakeOne();
    slots.set('w2', 'busy', true);
    assert.deepEqual(slots.woken, ['w1', 'w2', 'w3'], 'more were ready: the chain goes on');
  });

  test('every worker busy: nobody is woken; the next worker to turn idle is woken once', () => {
    const slots = new Slots(['w1', 'w2']);
    const waker = new JobWaker(slots, { now: () => 0 });
    slots.set('w1', 'starting');
    slots.set('w2', 'busy');
    assert.equal(waker.wakeOne(), undefined);
    assert.deepEqual(waker.counts, { wakes: 0, noneIdle: 1 });
    slots.set('w1', 'idle');
    assert.deepEqual(slots.woken, ['w1']);
    slots.set('w2', 'idle');
    assert.deepEqual(slots.woken, ['w1'], 'once');
  });

  test('a worker that cannot take the message is skipped', () => {
    const slots = new Slots(['w1', 'w2']);
    slots.refuse.add('w1');
    const waker = new JobWaker(slots, { now: () => 0 });
    assert.equal(waker.wakeOne(), 'w2');
    slots.refuse.add('w2');
    assert.equal(waker.wakeOne(), undefined);
  });
});
