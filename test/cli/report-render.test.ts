import assert from 'node:assert/strict';
import { test } from 'node:test';
import { failureReason, type ReportData } from '../../src/cli/report/data.ts';
import { renderReport } from '../../src/cli/report/html.ts';

/** The report's pure parts: grouping failures by reason, and a page whose every string is escaped. */

test('failures group by reason: ids, commits, paths and numbers are taken out, the first line kept', () => {
  const a = failureReason('evaluator exited with code 3 after 1200 ms in /tmp/x/y/1f2e3d4c-0000-4000-8000-000000000001\nstack…');
  const b = failureReason('evaluator exited with code 7 after 15 ms in /var/lib/z/9a8b7c6d-0000-4000-8000-000000000002');
  assert.equal(a, b);
  assert.equal(a, 'evaluator exited with code N after N ms in <path>');
  assert.equal(failureReason(`job is no longer held: result ${'ab12'.repeat(10)} discarded`), 'job is no longer held: result <commit> discarded');
  assert.equal(failureReason(null), '(no error recorded)');
});

test('every value from the run is escaped: a commit message cannot inject markup', () => {
  const evil = '<script>alert(1)</script><img src=x onerror=alert(2)>';
  const t = Date.parse('2026-11-23T10:00:00Z');
  const data: ReportData = {
    experiment: { slug: evil, namespace: 'ns', id: 'id', rootCommit: 'a'.repeat(40), createdAt: new Date(t), finishedAt: null },
    generatedAt: new Date(t),
    metric: evil,
    higherIsBetter: true,
    jobs: { byStatus: { pending: 0, queued: 0, running: 0, succeeded: 1, failed: 1, cancelled: 0 }, total: 2, budget: 2 },
    baseline: 1,
    best: { commit: 'b'.repeat(40), fitness: 2, jobId: 'j' },
    fitnessOverTime: { best: [{ t, y: 2 }], median: [{ t, y: 2 }], each: [{ t, y: 2 }] },
    archive: { elites: 1, cells: 4, coverage: 0.25, dimensions: 2, shown: [0, 1], bins: 2, heatmap: [{ x: 1, y: 0, fitness: 2, commit: 'b'.repeat(40), elites: 1 }] },
    lineage: [
      { commit: 'a'.repeat(40), jobId: null, message: evil, summary: '', metrics: { [evil]: 1 }, fitness: 1, diffStat: null, diff: null },
      { commit: 'b'.repeat(40), jobId: 'j', message: '', summary: evil, metrics: {}, fitness: 2, diffStat: ` f | 1 +\n 1 file changed`, diff: `diff --git a/f b/f\n+${evil}` },
    ],
    top: [{ commit: 'b'.repeat(40), fitness: 2, jobId: 'j', metrics: {}, summary: evil }],
    failures: [{ reason: evil, count: 1, example: evil, jobs: ['j'] }],
    usage: { calls: 1, failedCalls: 0, tokens: 10, costUsd: 0.5, cumulativeCost: [{ t, y: 0.5 }], cumulativeTokens: [{ t, y: 10 }], cumulativeCalls: [{ t, y: 1 }], byModel: [{ model: evil, calls: 1, tokens: 10, costUsd: 0.5 }] },
    repository: evil,
  };
  const html = renderReport(data);
  assert.doesNotMatch(html, /<script|<img/i);
  assert.ok(html.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  assert.equal((html.match(/class="cell best"/g) ?? []).length, 1);
  assert.equal((html.match(/<li class="step/g) ?? []).length, 2);
  assert.match(html, /<span class="add">\+&lt;script&gt;/);
});
