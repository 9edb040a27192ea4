import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Progress } from '../../src/supervisor/progress.ts';
import { statusLine } from '../../src/supervisor/status.ts';
import { formatRunSummary, withoutCredentials, type RunSummaryInput } from '../../src/supervisor/summary.ts';

/** The end-of-run summary and the status line, as text: every outcome a run can end with. */

function progress(overrides: Partial<Progress> = {}): Progress {
  return {
    jobs: { pending: 0, queued: 0, running: 0, succeeded: 38, failed: 2, cancelled: 0 },
    total: 40,
    budget: 40,
    baseline: { status: 'succeeded', fitness: 0.9598 },
    best: { commitHash: 'f'.repeat(40), value: 2.63512345, jobId: 'j1' },
    metric: 'combined_score',
    usage: { calls: 12, failedCalls: 1, promptTokens: 1000, completionTokens: 500, costUsd: 0.0123, byModel: [] },
    maxCostUsd: 5,
    archive: { elites: 18, cells: 1024, coverage: 18 / 1024 },
    ...overrides,
  };
}

function input(overrides: Partial<RunSummaryInput> = {}): RunSummaryInput {
  return {
    experiment: 'circle-packing',
    outcome: { kind: 'finished' },
    progress: progress(),
    atStart: progress({ total: 0, jobs: { pending: 0, queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 }, best: null }),
    wallMs: 95_000,
    checkout: { branch: 'evolution/best/cp-1', remoteUrl: '/srv/remote.git', pushed: true, baseClone: '/data/clone' },
    logsDirectory: '/exp/logs/cp-1',
    reportFile: '/exp/logs/cp-1/report.html',
    ...overrides,
  };
}

test('a finished run: why it ended, best and how to check it out, baseline, jobs by outcome, cost, wall time, logs and report', () => {
  const text = formatRunSummary(input());
  assert.equal(
    text,
    [
      'Run finished: the budget of 40 jobs is spent.',
      '  best      combined_score 2.6351 at ffffffffffff (+1.6753 over the baseline)',
      '            git clone --branch evolution/best/cp-1 /srv/remote.git best-program',
      '  baseline  combined_score 0.9598 (succeeded)',
      '  jobs      40 of 40: succeeded 38, failed 2; baseline succeeded',
      '  models    12 calls (1 failed), 1500 tokens, $0.0123 of $5.0000',
      '  archive   18 elites in 1024 cells (coverage 1.8%)',
      '  wall time 1m 35s',
      '  logs      loreley logs -f   (JSONL files under /exp/logs/cp-1)',
      '  report    loreley report --open   (writes /exp/logs/cp-1/report.html)',
      '  status    loreley status',
      '',
    ].join('\n'),
  );
});

test('a run started with the budget already spent says so and names --max-jobs', () => {
  const text = formatRunSummary(input({ atStart: progress() }));
  assert.match(text, /^Nothing new ran: the budget of 40 jobs was already spent before this run\.$/m);
  assert.match(text, /^To go on, raise it: loreley-supervisor --max-jobs 80 \(or set SCHEDULER_MAX_TOTAL_JOBS\)\.$/m);
  const cost = formatRunSummary(input({ progress: progress({ budget: null, usage: { ...progress().usage, costUsd: 5.2 } }), atStart: progress({ budget: null, usage: { ...progress().usage, costUsd: 5.2 } }) }));
  assert.match(cost, /^Run finished: the cost budget of \$5\.0000 is spent\.$/m);
  assert.match(cost, /already spent \(\$5\.2000\) before this run\.\nTo go on, raise LORELEY_MAX_COST_USD\./);
});

test('stopped by a signal, stopped by an error, nothing scored, no push: each is said plainly', () => {
  const stopped = formatRunSummary(input({ outcome: { kind: 'stopped', signal: 'SIGTERM' }, progress: progress({ best: null, baseline: null, usage: { ...progress().usage, calls: 0 } }) }));
  assert.match(stopped, /^Run stopped by SIGTERM before it finished; start the supervisor again to go on\.$/m);
  assert.match(stopped, /^ {2}best {6}no scored commit yet$/m);
  assert.match(stopped, /^ {2}baseline {2}not evaluated$/m);
  assert.match(stopped, /^ {2}models {4}no model calls$/m);
  const failed = formatRunSummary(input({ outcome: { kind: 'failed', code: 1 }, checkout: { ...input().checkout, pushed: false } }));
  assert.match(failed, /^Run stopped with an error \(exit 1\)/m);
  assert.match(failed, /^ {12}git -C \/data\/clone checkout f{40}$/m, 'an unpushed best is checked out from the base clone');
});

test('a remote URL with a token is printed without it', () => {
  assert.equal(withoutCredentials('https://user:ghp_secret@github.com/o/r.git'), 'https://github.com/o/r.git');
  assert.equal(withoutCredentials('/srv/remote.git'), '/srv/remote.git');
  assert.equal(withoutCredentials('git@github.com:o/r.git'), 'git@github.com:o/r.git');
  const text = formatRunSummary(input({ checkout: { ...input().checkout, remoteUrl: 'https://x:tok123456@example.com/r.git' } }));
  assert.ok(!text.includes('tok123456'));
});

test('the status line leads with jobs done of budget, best score so far and cost', () => {
  const line = statusLine(
    [{ id: 'worker0001', role: 'worker', state: 'busy', pid: 1, restarts: 0, jobId: 'abcdef0123', rssBytes: 100 * 1024 * 1024 }],
    progress({ jobs: { pending: 1, queued: 2, running: 1, succeeded: 10, failed: 2, cancelled: 0 } }),
  );
  assert.equal(line, 'jobs 12/40 done, 1 running, best 2.6351, $0.0123 of $5.0000 | 1 busy | worker0001=busy:abcdef01 100M');
  assert.equal(statusLine([]), ' | ', 'without progress it is the children only, as before');
});
