import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, test } from 'node:test';
import { runRebuild } from '../../src/cli/rebuild.ts';
import { insertJob } from '../../src/shared/db/jobs.ts';
import { openExperimentDatabase } from '../../src/shared/experiment-database.ts';
import { EvolutionScheduler } from '../../src/scheduler/scheduler.ts';
import { SeededRandom } from '../../src/scheduler/random.ts';
import { createTestDatabase, stopTestServer } from '../helpers/database.ts';
import { git, tempDir } from '../helpers/git.ts';
import { completeJob, createFixture, silentLogger } from '../scheduler/fixture.ts';

after(stopTestServer);

const CANDIDATES = 1000;

/** `count` commits in a chain on a branch of the remote, made by one fast-import: their hashes. */
function chainOfCommits(remote: string, root: string, count: number): string[] {
  const work = path.join(tempDir('loreley-scale-'), 'work');
  git(path.dirname(work), 'clone', '--quiet', remote, work);
  let stream = '';
  for (let i = 0; i < count; i++) {
    const content = `export const radius = ${i};\n`;
    const message = `candidate ${i}\n`;
    stream += `commit refs/heads/scale\nmark :${i + 1}\ncommitter T <t@example.com> ${1_700_000_000 + i} +0000\ndata ${Buffer.byteLength(message)}\n${message}`;
    stream += i === 0 ? `from ${root}\n` : '';
    stream += `M 100644 inline main.js\ndata ${Buffer.byteLength(content)}\n${content}\n`;
  }
  execFileSync('git', ['fast-import', '--quiet'], { cwd: work, input: stream });
  git(work, 'push', '--quiet', 'origin', 'scale');
  return git(work, 'rev-list', '--reverse', 'scale').split('\n').slice(-count);
}

test(`loreley rebuild of ${CANDIDATES} candidates from the remote's notes alone: the same archive and sampler state, in seconds`, async () => {
  const fixture = await createFixture({
    env: { MAPELITES_ISLANDS: '3', MAPELITES_MIGRATION_INTERVAL: '97', SCHEDULER_MAX_TOTAL_JOBS: String(CANDIDATES - 1), SCHEDULER_INGEST_BATCH_SIZE: '1000' },
  });
  try {
    const { settings, pool } = fixture;
    const experimentId = settings.experiment.uuid;
    const commits = chainOfCommits(fixture.remote, fixture.rootCommit, CANDIDATES - 1);
    const scheduler = new EvolutionScheduler({ settings, pool, boss: fixture.boss, logger: silentLogger, workerId: 'scheduler-test' });
    await scheduler.start();
    const random = new SeededRandom(7);
    const { rows: [baseline] } = await pool.query<{ id: string }>(`SELECT id FROM evolution_jobs WHERE experiment_id = $1 AND kind = 'baseline'`, [experimentId]);
    await completeJob(pool, experimentId, baseline.id, fixture.rootCommit, { combined_score: 0.3, sum_radii: 1, validity: 1 });
    for (const [i, commit] of commits.entries()) {
      const job = await insertJob(pool, { experimentId, baseCommit: i === 0 ? fixture.rootCommit : commits[i - 1], island: i % 3 });
      await completeJob(pool, experimentId, job.id, commit, { combined_score: random.next(), sum_radii: random.next() * 2.7, validity: random.next() });
    }
    // One tick ingests everything (the budget is spent: nothing new is scheduled); notes go out
    // 500 per publication.
    const tick = await scheduler.tick();
    assert.equal(tick.ingested + tick.rejected, CANDIDATES);
    for (let published = 0; published < CANDIDATES;) {
      const result = await scheduler.publishNotes();
      assert.ok(result.noted > 0 && result.pushed);
      published += result.noted;
    }
    const elites = async (db: typeof pool) => (await db.query('SELECT island, cell_key, commit_hash, fitness, job_id FROM archive_elites WHERE experiment_id = $1 ORDER BY island, cell_key', [experimentId])).rows;
    const state = async (db: typeof pool) => (await db.query('SELECT ingestions, rng_state::text, next_island FROM archive_state WHERE experiment_id = $1', [experimentId])).rows;
    const before = await elites(pool);
    const stateBefore = await state(pool);
    assert.ok(before.length > 50);

    // Another database, another host's directories: only the remote is shared.
    const url = await createTestDatabase();
    const lost = fixture.settingsWith({ DATABASE_URL: url, WORKER_REPO_WORKTREE: path.join(tempDir('loreley-rebuilt-'), 'clone') });
    let output = '';
    const started = performance.now();
    const out = new Writable({
      write(chunk, _encoding, done) {
        output += `${Math.round(performance.now() - started)} ms ${chunk}`;
        done();
      },
    });
    await runRebuild(lost, { force: false, yes: false, out });
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(`ℹ rebuild of ${CANDIDATES} candidates: ${seconds.toFixed(2)} s (clone, fetch, read notes, restore, replay)\n${output.replace(/^/gm, 'ℹ   ')}\n`);
    assert.match(output, new RegExp(`replayed ${CANDIDATES}/${CANDIDATES} ingestions`));
    // Over a database that holds the experiment: --force asks, and a wrong answer changes nothing.
    let asked = '';
    await assert.rejects(
      runRebuild(lost, { force: true, yes: false, out, confirm: async (question) => ((asked = question), 'no') }),
      /not confirmed: nothing changed/,
    );
    assert.match(asked, /already holds experiment scheduler-test \(1000 jobs, \d+ elites\)\. Stop every supervisor of it first\. Type the experiment id \(scheduler-test\)/);
    await assert.rejects(runRebuild(lost, { force: false, yes: false, out }), /already holds experiment scheduler-test .*'loreley rebuild --force' replaces it/);
    const rebuilt = await openExperimentDatabase({ settings: lost, applicationName: 'loreley-test', supervise: false });
    try {
      assert.deepEqual(await elites(rebuilt.pool), before);
      assert.deepEqual(await state(rebuilt.pool), stateBefore);
      const { rows } = await rebuilt.pool.query(`SELECT count(*)::int AS n FROM evolution_jobs WHERE experiment_id = $1 AND noted_at IS NOT NULL`, [experimentId]);
      assert.equal(rows[0].n, CANDIDATES, 'restored jobs count as noted: they are not written again');
    } finally {
      await rebuilt.close({ graceful: false });
    }
  } finally {
    await fixture.close();
  }
});
