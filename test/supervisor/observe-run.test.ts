import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { initExample } from '../../src/cli/init-example.ts';
import { freePort } from '../../src/shared/embedded-database.ts';
import { resolveExperiment } from '../../src/shared/experiment.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';
import { tempDir } from '../helpers/git.ts';
import { baseEnv, killAllSpawned, readLog, spawnLoreley, spawnSupervisor, waitFor, type Spawned } from '../helpers/processes.ts';

/**
 * A real run of the bundled example, watched the way an operator would: the Prometheus endpoint
 * scraped during the run and checked against the database, the console status line, the summary
 * the run ends with, and a second run with the budget already spent.
 */

const experiment = resolveExperiment('circle-packing');
const BUDGET = 16;
let directory: string;
let url: string;
let client: pg.Client;
let port: number;
let supervisor: Spawned;

before(async () => {
  directory = tempDir('loreley-observe-run-');
  initExample({ directory, example: 'circle-packing', maxJobs: BUDGET });
  url = await createTestDatabase();
  client = new pg.Client(url);
  await client.connect();
  port = await freePort();
});

after(async () => {
  killAllSpawned();
  await client?.end();
  await stopTestServer();
});

function env(extra: Record<string, string> = {}): Record<string, string> {
  return baseEnv({ DATABASE_URL: url, LOG_CONSOLE: 'false', LORELEY_DATA_DIR: path.join(directory, '.loreley'), SUPERVISOR_STATUS_INTERVAL_SECONDS: '0.5', ...extra });
}

/** `name{labels} value` lines of a scrape, keyed by `name{labels}`. */
function parseScrape(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

async function scrape(): Promise<{ contentType: string; samples: Map<string, number>; text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  const text = await response.text();
  return { contentType: response.headers.get('content-type') ?? '', samples: parseScrape(text), text };
}

async function dbCounts(): Promise<Record<string, number>> {
  const { rows } = await client.query<{ status: string; count: number }>(
    `SELECT status, count(*)::int AS count FROM loreley.evolution_jobs WHERE experiment_id = $1 AND kind = 'evolution' GROUP BY status`,
    [experiment.uuid],
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.count]));
}

test('the metrics endpoint, scraped during a run, matches the database; the status line shows progress', { timeout: 240_000 }, async () => {
  supervisor = spawnSupervisor(['--workers', '3', '--max-jobs', String(BUDGET), '--metrics-port', String(port)], { cwd: directory, env: env() });

  // During the run: some jobs done, not all.
  const during = await waitFor(
    'a scrape with jobs done while the run goes on',
    async () => {
      const { samples } = await scrape();
      const done = samples.get('loreley_jobs{status="succeeded"}') ?? 0;
      return done > 0 && done < BUDGET ? samples : undefined;
    },
    120_000,
    100,
    supervisor,
  );
  assert.equal(during.get('loreley_job_budget'), BUDGET);
  assert.equal(during.get('loreley_children{state="busy",role="worker"}')! + during.get('loreley_children{state="idle",role="worker"}')!, 3);

  await waitFor('the run to finish', async () => (await client.query('SELECT finished_at FROM loreley.experiments WHERE id = $1', [experiment.uuid])).rows[0]?.finished_at, 180_000, 200, supervisor);
  // Settled: every child idle again.
  const { samples, contentType, text } = await waitFor('every worker idle', async () => {
    const result = await scrape();
    return result.samples.get('loreley_children{state="idle",role="worker"}') === 3 ? result : undefined;
  });
  assert.match(contentType, /^text\/plain; version=0\.0\.4/);

  const counts = await dbCounts();
  for (const status of ['pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled']) {
    assert.equal(samples.get(`loreley_jobs{status="${status}"}`), counts[status] ?? 0, `jobs ${status}\n${text}`);
  }
  assert.equal(samples.get('loreley_queue_depth'), 0);
  const { rows: [ran] } = await client.query<{ finished: number; started: number }>(
    `SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed'))::int AS finished, count(*) FILTER (WHERE started_at IS NOT NULL)::int AS started
       FROM loreley.evolution_jobs WHERE experiment_id = $1`,
    [experiment.uuid],
  );
  // Histograms come from the workers over IPC: every job (the baseline too) was run by one of them.
  const durations = (samples.get('loreley_job_duration_seconds_count{outcome="succeeded"}') ?? 0) + (samples.get('loreley_job_duration_seconds_count{outcome="failed"}') ?? 0);
  assert.equal(durations, ran.finished, `job durations observed\n${text}`);
  assert.equal(samples.get('loreley_job_pickup_latency_seconds_count'), ran.started);
  assert.ok((samples.get('loreley_job_duration_seconds_sum{outcome="succeeded"}') ?? 0) > 0);
  assert.equal(samples.get('loreley_metrics_children_unanswered'), 0);

  const { rows: [archive] } = await client.query<{ elites: number }>('SELECT count(*)::int AS elites FROM loreley.archive_elites WHERE experiment_id = $1', [experiment.uuid]);
  assert.equal(samples.get('loreley_archive_elites'), archive.elites);
  assert.ok(samples.get('loreley_archive_coverage_ratio')! > 0);
  const { rows: [best] } = await client.query<{ value: number }>(`SELECT max(value) AS value FROM loreley.metrics WHERE experiment_id = $1 AND name = 'combined_score'`, [experiment.uuid]);
  assert.equal(samples.get('loreley_best_fitness'), best.value);
  assert.equal(samples.get('loreley_model_calls{ok="true"}'), 0);
  assert.equal(samples.get('loreley_model_cost_usd'), 0);
  assert.equal(samples.get('loreley_child_restarts{slot="worker0001",role="worker"}'), 0);
  assert.equal(samples.get('loreley_children{state="idle",role="scheduler"}'), 1);

  const notFound = await fetch(`http://127.0.0.1:${port}/other`);
  assert.equal(notFound.status, 404);

  // The console status line carries the progress.
  const supervisorLog = readLog(path.join(directory, 'logs', experiment.namespace, 'supervisor', 'supervisor'));
  const statusLines = supervisorLog.filter((line) => line.msg === 'status').map((line) => String(line.status));
  assert.ok(statusLines.some((line) => new RegExp(`^jobs ${BUDGET}/${BUDGET} done, best [0-9.]+, \\$0\\.0000 \\| `).test(line)), statusLines.slice(-3).join('\n'));
});

test('a worker SIGKILLed: every scrape still answers, and the slot\'s restart is counted', { timeout: 120_000 }, async () => {
  const { rows: [worker] } = await client.query<{ pid: number }>(`SELECT pid FROM loreley.workers WHERE experiment_id = $1 AND worker_id = 'worker0001'`, [experiment.uuid]);
  process.kill(worker.pid, 'SIGKILL');
  const after = await waitFor('the restart to show', async () => {
    const { samples } = await scrape();
    return samples.get('loreley_child_restarts{slot="worker0001",role="worker"}') === 1 ? samples : undefined;
  }, 60_000, 100, supervisor);
  assert.equal(after.get('loreley_child_restarts{slot="worker0002",role="worker"}'), 0);
  await waitFor('worker0001 back and idle', async () => (await scrape()).samples.get('loreley_children{state="idle",role="worker"}') === 3, 60_000, 100, supervisor);
});

test('stopping the finished run prints the summary on stdout, matching the database', { timeout: 120_000 }, async () => {
  supervisor.killGroup('SIGTERM');
  const exit = await supervisor.waitExit(90_000);
  assert.equal(exit.code, 0, supervisor.stderr().slice(-2000));
  const stdout = supervisor.stdout();
  const { rows: [best] } = await client.query<{ commit_hash: string; value: number }>(
    `SELECT commit_hash, value FROM loreley.metrics WHERE experiment_id = $1 AND name = 'combined_score' ORDER BY value DESC, created_at LIMIT 1`,
    [experiment.uuid],
  );
  const counts = await dbCounts();
  assert.match(stdout, new RegExp(`^Run finished: the budget of ${BUDGET} jobs is spent\\.$`, 'm'));
  assert.match(stdout, new RegExp(`^  best      combined_score [0-9.]+ at ${best.commit_hash.slice(0, 12)}`, 'm'));
  assert.match(stdout, new RegExp(`^            git clone --branch evolution/best/${experiment.namespace} ${path.join(directory, 'remote.git')} best-program$`, 'm'));
  assert.match(stdout, /^ {2}baseline {2}combined_score [0-9.]+ \(succeeded\)$/m);
  assert.match(stdout, new RegExp(`^  jobs      ${BUDGET} of ${BUDGET}: succeeded ${counts.succeeded ?? 0}, failed ${counts.failed ?? 0}; baseline succeeded$`, 'm'));
  assert.match(stdout, /^ {2}models {4}no model calls$/m);
  assert.match(stdout, /^ {2}wall time [0-9.]+s$/m);
  assert.match(stdout, new RegExp(`^  logs      loreley logs -f   \\(JSONL files under ${path.join(directory, 'logs', experiment.namespace)}\\)$`, 'm'));
  assert.match(stdout, /^ {2}report {4}loreley report --open/m);
});

test('a second run with the budget already spent says so and names --max-jobs', { timeout: 120_000 }, async () => {
  const again = spawnSupervisor(['--workers', '1', '--exit-when-done'], { cwd: directory, env: env() });
  const exit = await again.waitExit(90_000);
  assert.equal(exit.code, 0, again.stderr().slice(-2000));
  assert.match(again.stdout(), new RegExp(`^Nothing new ran: the budget of ${BUDGET} jobs was already spent before this run\\.$`, 'm'));
  assert.match(again.stdout(), new RegExp(`^To go on, raise it: loreley-supervisor --max-jobs ${BUDGET * 2} `, 'm'));
  assert.ok(readFileSync(path.join(directory, '.env'), 'utf8').includes(`SCHEDULER_MAX_TOTAL_JOBS=${BUDGET}`));
});

const CHROMIUM = process.env.LORELEY_CHROMIUM ?? '/usr/bin/chromium';

test('loreley report: one self-contained HTML file that draws the run (rendered in headless Chromium)', { timeout: 180_000 }, async (t) => {
  const out = path.join(tempDir('loreley-report-'), 'report.html');
  const run = spawnLoreley(['report', '--out', out], { cwd: directory, env: env() });
  const exit = await run.waitExit(60_000);
  assert.equal(exit.code, 0, run.stderr());
  assert.equal(run.stdout(), `Report written to ${out}\n`);
  const html = readFileSync(out, 'utf8');
  assert.doesNotMatch(html, /<script|<link|https?:\/\/(?!www\.w3\.org)/i, 'no script, no stylesheet link, no URL to fetch');

  if (!existsSync(CHROMIUM)) {
    t.skip(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set LORELEY_CHROMIUM): the page was written but not rendered`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(tempDir('loreley-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await context.newPage();
    const fetched: string[] = [];
    await page.route('**/*', (route) => {
      const requested = route.request().url();
      if (requested.startsWith('file://')) return route.continue();
      fetched.push(requested);
      return route.abort();
    });
    await page.goto(`file://${out}`);
    assert.deepEqual(fetched, [], 'the page needs nothing from the network');

    const { rows: scored } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM loreley.evolution_jobs j JOIN loreley.metrics m ON m.experiment_id = j.experiment_id AND m.commit_hash = j.result_commit AND m.name = 'combined_score'
        WHERE j.experiment_id = $1 AND j.kind = 'evolution' AND j.status = 'succeeded'`,
      [experiment.uuid],
    );
    assert.ok(scored[0].n > 0);
    assert.equal(await page.locator('#fitness-chart circle.point[data-series="best so far"]').count(), scored[0].n, 'one best-so-far point per scored job');
    assert.equal(await page.locator('#fitness-chart circle.point[data-series="each scored job"]').count(), scored[0].n);
    assert.ok((await page.locator('#fitness-chart path.line').count()) >= 1, 'the lines are drawn');
    const box = await page.locator('#fitness-chart').boundingBox();
    assert.ok(box && box.width > 600 && box.height > 150, `the fitness chart is drawn at a readable size (${JSON.stringify(box)})`);

    const { rows: elites } = await client.query<{ descriptor: number[]; commit_hash: string }>('SELECT descriptor, commit_hash FROM loreley.archive_elites WHERE experiment_id = $1', [experiment.uuid]);
    const bins = new Set(elites.map((e) => `${Math.min(31, Math.floor(e.descriptor[0] * 32))},${Math.min(31, Math.floor(e.descriptor[1] * 32))}`));
    assert.equal(await page.locator('#archive-heatmap rect.cell').count(), bins.size, 'one square per archive bin in the two shown dimensions');
    const cellCommits = await page.locator('#archive-heatmap rect.cell').evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-commit')));
    for (const commit of cellCommits) assert.ok(elites.some((e) => e.commit_hash === commit), `${commit} is an elite`);

    const { rows: [best] } = await client.query<{ commit_hash: string }>(
      `SELECT commit_hash FROM loreley.metrics WHERE experiment_id = $1 AND name = 'combined_score' ORDER BY value DESC, created_at LIMIT 1`,
      [experiment.uuid],
    );
    assert.equal(await page.locator('#lineage li.step.best').getAttribute('data-commit'), best.commit_hash, 'the lineage ends at the best commit');
    assert.equal(await page.locator('#archive-heatmap rect.cell.best').getAttribute('data-commit'), best.commit_hash);
    assert.equal(await page.locator('#top-commits tbody tr').first().locator('code').getAttribute('title'), best.commit_hash);
    const steps = await page.locator('#lineage li.step').count();
    t.diagnostic(`lineage of the best commit: ${steps} steps`);
    if (steps > 1) {
      const diff = page.locator('#lineage li.step').nth(1).locator('details.diff');
      assert.equal(await diff.locator('pre.diff-text').isVisible(), false, 'the diff is folded');
      await diff.locator('summary').click();
      assert.equal(await diff.locator('pre.diff-text').isVisible(), true, 'and opens on click');
      assert.match(await diff.locator('pre.diff-text').innerText(), /^diff --git a\/pack\.js b\/pack\.js/);
    }
    const screenshot = process.env.LORELEY_REPORT_SCREENSHOT ?? path.join(path.dirname(out), 'report.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    t.diagnostic(`screenshot: ${screenshot}`);
  } finally {
    await context.close();
  }
});
