import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RestartPolicy, type RestartDecision, type RestartPolicySettings } from '../../src/supervisor/restart-policy.ts';

/**
 * The restart policy on its own: it is told the clock, so every case is a sequence of
 * `onCrash(now, uptimeMs)` calls and the decisions they return.
 */

const SETTINGS: RestartPolicySettings = { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000, maxCrashes: 5, windowMs: 300_000 };

function policy(overrides: Partial<RestartPolicySettings> = {}): RestartPolicy {
  return new RestartPolicy({ ...SETTINGS, ...overrides });
}

function delay(decision: RestartDecision): number {
  assert.equal(decision.action, 'restart', `expected a restart, got ${JSON.stringify(decision)}`);
  return (decision as { delayMs: number }).delayMs;
}

describe('exponential backoff', () => {
  test('starts at the initial delay and doubles up to the maximum, then stays there', () => {
    // Never give up here: the window is tiny and crashes are spaced beyond it.
    const p = policy({ maxCrashes: 1, windowMs: 10 });
    const delays: number[] = [];
    let now = 0;
    for (let i = 0; i < 9; i += 1) {
      now += 100;
      delays.push(delay(p.onCrash(now, 5)));
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000]);
  });

  test('a maximum that is not a power-of-two multiple of the initial delay is reached exactly', () => {
    const p = policy({ initialMs: 300, maxMs: 1000, maxCrashes: 100 });
    const delays = [1, 2, 3, 4, 5].map((i) => delay(p.onCrash(i, 0)));
    assert.deepEqual(delays, [300, 600, 1000, 1000, 1000]);
  });

  test('an initial delay of 0 restarts at once, then backs off from 1 ms', () => {
    const p = policy({ initialMs: 0, maxMs: 5, maxCrashes: 100 });
    const delays = [1, 2, 3, 4, 5].map((i) => delay(p.onCrash(i, 0)));
    assert.deepEqual(delays, [0, 2, 4, 5, 5]);
  });
});

describe('reset after a healthy run', () => {
  test('a child that ran at least resetAfterMs before crashing restarts after the initial delay again', () => {
    const p = policy({ maxCrashes: 100 });
    assert.equal(delay(p.onCrash(1000, 10)), 1000);
    assert.equal(delay(p.onCrash(2000, 10)), 2000);
    assert.equal(delay(p.onCrash(3000, 10)), 4000);
    // Just short of a healthy minute: no reset.
    assert.equal(delay(p.onCrash(4000, 59_999)), 8000);
    // A healthy minute: back to the start, and doubling again from there.
    assert.equal(delay(p.onCrash(70_000, 60_000)), 1000);
    assert.equal(delay(p.onCrash(71_000, 10)), 2000);
    assert.equal(delay(p.onCrash(72_000, 120_000)), 1000);
  });

  test('the reset does not clear the crash history: a crash loop still counts the earlier crashes', () => {
    const p = policy({ maxCrashes: 2, windowMs: 300_000, resetAfterMs: 1000 });
    assert.equal(delay(p.onCrash(10_000, 5000)), 1000);
    assert.equal(delay(p.onCrash(20_000, 5000)), 1000);
    assert.deepEqual(p.onCrash(30_000, 5000), { action: 'give-up', crashes: 3 });
  });
});

describe('the crash window', () => {
  test('crashes older than the window no longer count: a slot that crashes slowly is never given up on', () => {
    const p = policy({ maxCrashes: 2, windowMs: 10_000 });
    // One crash every 6 s: at most two fall within any 10 s window, forever.
    for (let i = 1; i <= 50; i += 1) {
      const decision = p.onCrash(i * 6000, 100);
      assert.equal(decision.action, 'restart', `crash ${i}: ${JSON.stringify(decision)}`);
      assert.ok(p.recentCrashes(i * 6000) <= 2);
    }
  });

  test('a crash exactly windowMs old has left the window', () => {
    const p = policy({ maxCrashes: 1, windowMs: 10_000 });
    assert.equal(p.onCrash(0, 0).action, 'restart');
    assert.equal(p.recentCrashes(9999), 1);
    assert.equal(p.recentCrashes(10_000), 0);
    assert.equal(p.onCrash(10_000, 0).action, 'restart', 'the crash at 0 no longer counts at 10 000');
    assert.deepEqual(p.onCrash(19_999, 0), { action: 'give-up', crashes: 2 });
  });

  test('recentCrashes counts only the crashes within the window before `now`', () => {
    const p = policy({ maxCrashes: 100, windowMs: 1000 });
    for (const at of [0, 100, 500, 900]) p.onCrash(at, 0);
    assert.equal(p.recentCrashes(900), 4);
    assert.equal(p.recentCrashes(1050), 3);
    assert.equal(p.recentCrashes(1550), 1);
    assert.equal(p.recentCrashes(5000), 0);
  });
});

describe('giving up', () => {
  test('gives up exactly when more than maxCrashes crashes fall within the window', () => {
    const p = policy({ maxCrashes: 3, windowMs: 60_000 });
    assert.equal(p.onCrash(1000, 0).action, 'restart');
    assert.equal(p.onCrash(2000, 0).action, 'restart');
    assert.equal(p.onCrash(3000, 0).action, 'restart', 'maxCrashes crashes are still restarted');
    assert.deepEqual(p.onCrash(4000, 0), { action: 'give-up', crashes: 4 });
  });

  test('the same crashes spread past the window are restarted', () => {
    const p = policy({ maxCrashes: 3, windowMs: 60_000 });
    for (const at of [0, 1000, 2000]) assert.equal(p.onCrash(at, 0).action, 'restart');
    // The crash at 0 has left the window when the fourth comes at 60 000.
    assert.equal(p.onCrash(60_000, 0).action, 'restart');
    assert.deepEqual(p.onCrash(60_500, 0), { action: 'give-up', crashes: 4 });
  });

  test('maxCrashes 0 gives up on the first crash', () => {
    assert.deepEqual(policy({ maxCrashes: 0 }).onCrash(0, 0), { action: 'give-up', crashes: 1 });
  });

  test('the defaults: 1 s doubling to 30 s, give-up at the sixth crash within 300 s', () => {
    const p = policy();
    const decisions = [0, 1, 2, 3, 4, 5].map((i) => p.onCrash(i * 10_000, 100));
    assert.deepEqual(decisions.slice(0, 5).map(delay), [1000, 2000, 4000, 8000, 16_000]);
    assert.deepEqual(decisions[5], { action: 'give-up', crashes: 6 });
  });

  test('each slot has its own policy: one slot giving up leaves another fresh', () => {
    const a = policy({ maxCrashes: 1 });
    const b = policy({ maxCrashes: 1 });
    a.onCrash(0, 0);
    assert.equal(a.onCrash(1, 0).action, 'give-up');
    assert.equal(delay(b.onCrash(2, 0)), 1000);
  });
});

describe('kills from outside (min-uptime, as pm2 does)', () => {
  test('a child killed from outside after min-uptime never counts: a healthy slot killed every 10 s is never errored', () => {
    const p = policy({ maxCrashes: 2, windowMs: 300_000, minUptimeMs: 5000 });
    for (let i = 1; i <= 100; i += 1) {
      const decision = p.onCrash(i * 10_000, 9000, { external: true });
      assert.deepEqual(decision, { action: 'restart', delayMs: 1000, counted: false }, `kill ${i}`);
    }
    assert.equal(p.recentCrashes(1_000_000), 0);
  });

  test('a child killed from outside while still young counts like a crash', () => {
    const p = policy({ maxCrashes: 2, windowMs: 300_000, minUptimeMs: 5000 });
    assert.equal(delay(p.onCrash(1000, 4999, { external: true })), 1000);
    assert.equal(delay(p.onCrash(2000, 100, { external: true })), 2000);
    assert.deepEqual(p.onCrash(3000, 0, { external: true }), { action: 'give-up', crashes: 3 });
  });

  test('crashes of its own count whatever the uptime; an outside kill in between neither counts nor backs off', () => {
    const p = policy({ maxCrashes: 2, windowMs: 300_000, minUptimeMs: 5000 });
    assert.equal(delay(p.onCrash(1000, 10_000)), 1000);
    assert.equal(delay(p.onCrash(2000, 10_000, { external: true })), 2000);
    assert.equal(delay(p.onCrash(3000, 10_000)), 2000);
    assert.deepEqual(p.onCrash(4000, 10_000), { action: 'give-up', crashes: 3 });
  });

  test('without minUptimeMs every death counts, as before', () => {
    const p = policy({ maxCrashes: 1 });
    assert.equal(p.onCrash(0, 100_000, { external: true }).action, 'restart');
    assert.equal(p.onCrash(1, 100_000, { external: true }).action, 'give-up');
  });
});
