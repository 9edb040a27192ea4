import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff } from '../../src/shared/backoff.ts';

test('delays double from the initial delay up to the cap, with the top of the jitter range', () => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 1);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => backoff.next()), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoff.failures, 6);
});

test('jitter keeps each delay within [base/2, base]', () => {
  const low = new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => low.next()), [50, 100, 200, 400, 500]);
  let i = 0;
  const values = [0.1, 0.9, 0.5, 0.3];
  const mixed = new Backoff({ initialMs: 100, maxMs: 1000 }, () => values[i++ % values.length]);
  for (let n = 0; n < 40; n += 1) {
    const delay = mixed.next();
    const base = Math.min(1000, 100 * 2 ** n);
    assert.ok(delay >= base / 2 && delay <= base, `${delay} within [${base / 2}, ${base}]`);
  }
});

test('reset starts again from the initial delay', () => {
  const backoff = new Backoff({ initialMs: 10, maxMs: 80 }, () => 1);
  backoff.next();
  backoff.next();
  backoff.next();
  backoff.reset();
  assert.equal(backoff.failures, 0);
  assert.equal(backoff.next(), 10);
});

test('a huge number of failures neither overflows nor passes the cap', () => {
  const backoff = new Backoff({ initialMs: 1, maxMs: 5000 }, () => 1);
  let last = 0;
  for (let n = 0; n < 10_000; n += 1) last = backoff.next();
  assert.equal(last, 5000);
});

test('bad settings are refused with a precise error', () => {
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }), /0 <= initialMs <= maxMs \(got 10, 5\)/);
  assert.throws(() => new Backoff({ initialMs: -1, maxMs: 5 }), RangeError);
});
