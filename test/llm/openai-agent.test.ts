import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { insertJob, recordFailure } from '../../src/shared/db/jobs.ts';
import { getArtifacts, getCommitCard, getMetrics, upsertCommitCard, upsertMetrics } from '../../src/shared/db/results.ts';
import { jobUsage, usageTotals } from '../../src/shared/db/usage.ts';
import { EvolutionWorkerError } from '../../src/shared/errors.ts';
import { createAgent } from '../../src/worker/agents/index.ts';
import { stopTestServer } from '../helpers/database.ts';
import { git, tempDir } from '../helpers/git.ts';
import { startFakeOpenAi, type FakeOpenAi } from './helpers/fake-openai.ts';
import { createHarness, type Harness } from './helpers/harness.ts';

const PROGRAM = [
  'const helper = 1;',
  '// EVOLVE-BLOCK-START',
  'const SCORE = 1;',
  '// EVOLVE-BLOCK-END',
  'module.exports = { SCORE, helper };',
  '',
].join('\n');

const GOOD_EDIT = [
  'SUMMARY: raise the score to five',
  '',
  'program.js',
  '<<<<<<< SEARCH',
  'const SCORE = 1;',
  '=======',
  'const SCORE = 5;',
  '>>>>>>> REPLACE',
].join('\n');

const open: Array<Harness | FakeOpenAi> = [];
after(async () => {
  for (const thing of open.reverse()) await thing.close();
  await stopTestServer();
});

async function setup(steps: Parameters<typeof startFakeOpenAi>[0], env: Record<string, string> = {}): Promise<{ harness: Harness; server: FakeOpenAi }> {
  const server = await startFakeOpenAi(steps);
  open.push(server);
  const harness = await createHarness({
    files: { 'program.js': PROGRAM, 'README.md': 'not evolvable\n' },
    env: {
      WORKER_AGENT_BACKEND: 'openai',
      OPENAI_BASE_URL: server.url,
      OPENAI_API_KEY: 'sk-test-key-never-logged',
      WORKER_AGENT_MODELS: 'gpt-4o-mini',
      WORKER_AGENT_MAX_RETRIES: '2',
      WORKER_EVOLVE_PATHS: 'program.js',
      ...env,
    },
  });
  open.push(harness);
  return { harness, server };
}

/** A commit on another branch of the remote, with its card and metrics in the database. */
async function inspiration(harness: Harness, score: number): Promise<string> {
  const work = path.join(tempDir(), 'insp');
  git(path.dirname(work), 'clone', '--quiet', harness.remote, work);
  writeFileSync(path.join(work, 'program.js'), PROGRAM.replace('const SCORE = 1;', `const SCORE = ${score}; // from a sibling`));
  git(work, 'commit', '--quiet', '-am', 'sibling idea');
  const commit = git(work, 'rev-parse', 'HEAD');
  git(work, 'push', '--quiet', 'origin', `HEAD:refs/heads/sibling-${score}`);
  const experimentId = harness.settings.experiment.uuid;
  await upsertCommitCard(harness.pool, {
    experimentId, commitHash: commit, parentCommit: harness.baseCommit, jobId: null, branch: null, author: 'test',
    message: 'sibling idea', summary: 'the sibling scored well', changedFiles: ['program.js'],
  });
  await upsertMetrics(harness.pool, experimentId, commit, null, [{ name: 'score', value: score }]);
  return commit;
}

describe('openai agent in a real evolution job', () => {
  it('plans, retries a 429, applies the edit, commits, evaluates and records tokens and cost', async () => {
    const { harness, server } = await setup(
      [
        { status: 429, headers: { 'retry-after-ms': '20' }, body: { error: { message: 'rate limited', type: 'rate_limit' } } },
        { reply: 'Raise SCORE: the evaluator reads it directly.', promptTokens: 800, completionTokens: 40 },
        { reply: GOOD_EDIT, promptTokens: 1200, completionTokens: 60 },
      ],
      { WORKER_PLANNING_ENABLED: 'true', SCHEDULER_GOAL: 'maximise SCORE' },
    );
    const experimentId = harness.settings.experiment.uuid;
    await upsertMetrics(harness.pool, experimentId, harness.baseCommit, null, [{ name: 'score', value: 1 }]);
    const failed = await insertJob(harness.pool, { experimentId, baseCommit: harness.baseCommit });
    await harness.pool.query(`UPDATE evolution_jobs SET status = 'running' WHERE id = $1`, [failed.id]);
    await recordFailure(harness.pool, failed.id, 'SyntaxError: Unexpected token in program.js', true);
    const sibling = await inspiration(harness, 3);

    const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
    const { job, outcome, error } = await harness.runJob(agent, { inspirations: [sibling], goal: 'maximise SCORE' });
    assert.equal(error, undefined, String(error));
    assert.equal(job.status, 'succeeded');
    assert.ok(outcome);

    // The 429 was retried; the plan went into the coding prompt.
    const requests = server.chatRequests();
    assert.equal(requests.length, 3);
    const planUser = requests[1].body.messages.at(-1).content as string;
    const codeUser = requests[2].body.messages.at(-1).content as string;
    assert.match(planUser, /Do not write code yet/);
    assert.match(codeUser, /Raise SCORE: the evaluator reads it directly\./);
    // The prompt carries the goal, the parent's code and metrics, the sibling and the failure.
    assert.match(codeUser, /maximise SCORE/);
    assert.match(codeUser, /const SCORE = 1;/);
    assert.match(codeUser, /- score: 1 \(higher is better\)/);
    assert.match(codeUser, /\+const SCORE = 3; \/\/ from a sibling/);
    assert.match(codeUser, /the sibling scored well/);
    assert.match(codeUser, /- score: 3/);
    assert.match(codeUser, /SyntaxError: Unexpected token in program\.js/);
    assert.doesNotMatch(codeUser, /not evolvable/);
    assert.match(requests[2].body.messages[0].content, /<<<<<<< SEARCH/);

    // Committed, pushed and evaluated.
    assert.equal(git(harness.remote, 'show', `${outcome.commit}:program.js`), PROGRAM.replace('SCORE = 1', 'SCORE = 5').trimEnd());
    assert.equal(git(harness.remote, 'log', '-1', '--format=%s', outcome.commit), 'raise the score to five');
    assert.deepEqual((await getMetrics(harness.pool, experimentId, outcome.commit)).map((m) => [m.name, m.value]), [['score', 5]]);
    assert.equal((await getCommitCard(harness.pool, experimentId, outcome.commit))?.message, 'raise the score to five');

    const artifacts = await getArtifacts(harness.pool, job.id);
    assert.match(artifacts.prompt, /## system[\s\S]*## user/);
    assert.equal(artifacts.reply, GOOD_EDIT);
    assert.equal(artifacts.plan, 'Raise SCORE: the evaluator reads it directly.');
    assert.match(artifacts.diff, /-const SCORE = 1;\n\+const SCORE = 5;/);
    assert.equal(artifacts.model, 'gpt-4o-mini');

    // One row per call: the SDK retried the 429 inside the planning call.
    const usage = await jobUsage(harness.pool, job.id);
    assert.deepEqual({ calls: usage.calls, prompt: usage.promptTokens, completion: usage.completionTokens }, { calls: 2, prompt: 2000, completion: 100 });
    assert.ok(Math.abs(usage.costUsd - (2000 * 0.15 + 100 * 0.6) / 1e6) < 1e-12);
    const totals = await usageTotals(harness.pool, experimentId);
    assert.equal(totals.byModel[0].model, 'gpt-4o-mini');
    const { rows } = await harness.pool.query(`SELECT purpose FROM model_calls WHERE job_id = $1 ORDER BY id`, [job.id]);
    assert.deepEqual(rows.map((r) => r.purpose), ['plan', 'code']);
  });

  it('sends a reply that does not apply back with the reason, then fails the job cleanly', async () => {
    const wrongSearch = GOOD_EDIT.replace('const SCORE = 1;\n=', 'const SCORE = 100;\n=');
    const outsideRegion = ['SUMMARY: cheat', 'program.js', '<<<<<<< SEARCH', 'const helper = 1;', '=======', 'const helper = 2;', '>>>>>>> REPLACE'].join('\n');
    const { harness, server } = await setup([{ reply: wrongSearch }, { reply: outsideRegion }], { WORKER_AGENT_MAX_ATTEMPTS: '2' });
    const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
    const { job, error } = await harness.runJob(agent);

    assert.ok(error instanceof EvolutionWorkerError, String(error));
    assert.equal(job.status, 'failed');
    assert.equal(job.resultCommit, null);
    assert.match(job.lastError ?? '', /could not be applied after 2 replies/);
    assert.match(job.lastError ?? '', /outside the EVOLVE-BLOCK-START/);

    const [first, second] = server.chatRequests();
    assert.equal(first.body.messages.length, 2);
    assert.equal(second.body.messages.length, 4);
    assert.equal(second.body.messages[2].role, 'assistant');
    assert.equal(second.body.messages[2].content, wrongSearch);
    assert.match(second.body.messages[3].content, /block 1 \(program\.js\): the SEARCH text was not found/);

    const artifacts = await getArtifacts(harness.pool, job.id);
    assert.match(artifacts.prompt, /const SCORE = 1;/);
    assert.match(artifacts.reply, /reply 1 =====\n[\s\S]*SCORE = 100[\s\S]*reply 2 =====\n[\s\S]*helper = 2/);
    assert.equal(artifacts.diff, undefined);
    assert.equal((await jobUsage(harness.pool, job.id)).calls, 2);
  });

  it('refuses edits to files outside WORKER_EVOLVE_PATHS and accepts full files in full mode', async () => {
    const readme = ['README.md', '```', 'rewritten', '```'].join('\n');
    const whole = ['SUMMARY: whole file', 'program.js', '```js', PROGRAM.replace('SCORE = 1', 'SCORE = 9').trimEnd(), '```'].join('\n');
    const { harness, server } = await setup([{ reply: readme }, { reply: whole }], { WORKER_AGENT_EDIT_MODE: 'full' });
    const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
    const { job, outcome, error } = await harness.runJob(agent);
    assert.equal(error, undefined, String(error));
    assert.equal(job.status, 'succeeded');
    assert.match(server.chatRequests()[1].body.messages[3].content, /README\.md is not evolvable; only files matching program\.js may change/);
    assert.match(server.chatRequests()[0].body.messages[0].content, /complete new content/);
    assert.deepEqual((await getMetrics(harness.pool, harness.settings.experiment.uuid, outcome!.commit)).map((m) => m.value), [9]);
    assert.equal(git(harness.remote, 'show', `${outcome!.commit}:README.md`), 'not evolvable');
  });

  it('fails the job when the model hangs past the request timeout', async () => {
    const { harness } = await setup([{ hang: true }], { WORKER_AGENT_REQUEST_TIMEOUT_SECONDS: '0.3', WORKER_AGENT_MAX_RETRIES: '0' });
    const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
    const started = performance.now();
    const { job } = await harness.runJob(agent);
    assert.ok(performance.now() - started < 20_000);
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', /coding call failed: the call to model "gpt-4o-mini" at http:\/\/127\.0\.0\.1:\d+\/v1 timed out after 0\.3s/);
    const artifacts = await getArtifacts(harness.pool, job.id);
    assert.ok(artifacts.prompt);
    const { rows } = await harness.pool.query('SELECT ok FROM model_calls WHERE job_id = $1', [job.id]);
    assert.deepEqual(rows, [{ ok: false }]);
  });
});
