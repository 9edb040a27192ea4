import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { upsertElite } from '../../src/shared/db/archive.ts';
import { getArtifacts, upsertCommitCard, upsertMetrics } from '../../src/shared/db/results.ts';
import { createAgent } from '../../src/worker/agents/index.ts';
import { fitSections } from '../../src/worker/llm/sections.ts';
import { stopTestServer } from '../helpers/database.ts';
import { git, tempDir } from '../helpers/git.ts';
import { startFakeOpenAi, type FakeOpenAi } from './helpers/fake-openai.ts';
import { createHarness, type Harness } from './helpers/harness.ts';

/**
 * Every piece of feedback the issue asks for reaches the model's prompt, through real jobs: the
 * evaluator's summary and the end of its output on the parent; earlier attempts from the parent
 * (a worse one and one whose edit did not apply, with the precise reason); the parent's cell and
 * descriptor; the archive's top programs. All against the stand-in model server.
 */

const PROGRAM = ['const helper = 1;', '// EVOLVE-BLOCK-START', 'const SCORE = 1;', '// EVOLVE-BLOCK-END', 'module.exports = { SCORE, helper };', ''].join('\n');

/** Scores the SCORE constant and talks about it on both streams, as real evaluators do. */
const EVALUATOR = `
const fs = require('node:fs');
const score = Number(/SCORE\\s*=\\s*(-?[0-9.]+)/.exec(fs.readFileSync('program.js', 'utf8'))[1]);
process.stderr.write('diagnostic: checked SCORE=' + score + ' against the target 10\\n');
console.log('progress: 100%');
console.log(JSON.stringify({ summary: 'SCORE is ' + score + ', target 10', score }));
`;

const edit = (summary: string, from: string, to: string) => [`SUMMARY: ${summary}`, '', 'program.js', '<<<<<<< SEARCH', from, '=======', to, '>>>>>>> REPLACE'].join('\n');

let server: FakeOpenAi;
let harness: Harness;
let topCommit: string;

async function run(kindOrInspirations: { kind?: string; inspirations?: string[] } = {}) {
  const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
  return harness.runJob(agent, { goal: 'reach SCORE 10', ...kindOrInspirations });
}

before(async () => {
  server = await startFakeOpenAi();
  const root = tempDir('loreley-feedback-');
  const evaluator = path.join(root, 'score.cjs');
  writeFileSync(evaluator, EVALUATOR);
  harness = await createHarness({
    files: { 'program.js': PROGRAM },
    env: {
      WORKER_AGENT_BACKEND: 'openai', OPENAI_BASE_URL: server.url, OPENAI_API_KEY: 'sk-test', WORKER_AGENT_MODELS: 'gpt-4o-mini',
      WORKER_AGENT_MAX_RETRIES: '0', WORKER_AGENT_MAX_ATTEMPTS: '1', WORKER_EVOLVE_PATHS: 'program.js',
      WORKER_EVALUATOR_COMMAND: JSON.stringify([process.execPath, evaluator]), MAPELITES_FITNESS_METRIC: 'score',
    },
  });
  const experimentId = harness.settings.experiment.uuid;
  // The parent (the root) evaluated as the baseline: its card, metrics and evaluator output.
  const baseline = await run({ kind: 'baseline' });
  assert.equal(baseline.job.status, 'succeeded', String(baseline.error));
  // Attempt 1: succeeds but scores worse than the parent.
  server.push({ reply: edit('drop SCORE to zero', 'const SCORE = 1;', 'const SCORE = 0;') });
  assert.equal((await run()).job.status, 'succeeded');
  // Attempt 2: quotes a line that is not in the file; with one reply allowed the job fails.
  server.push({ reply: edit('try SCORE two', 'const SCORE = 11;', 'const SCORE = 2;') });
  assert.equal((await run()).job.status, 'failed');
  // The archive: the parent in cell [1, 2] and a better program elsewhere.
  const work = path.join(tempDir(), 'top');
  git(path.dirname(work), 'clone', '--quiet', harness.remote, work);
  writeFileSync(path.join(work, 'program.js'), PROGRAM.replace('const SCORE = 1;', 'const SCORE = 8; // the archive best'));
  git(work, 'commit', '--quiet', '-am', 'the best so far');
  topCommit = git(work, 'rev-parse', 'HEAD');
  git(work, 'push', '--quiet', 'origin', 'HEAD:refs/heads/top');
  await upsertCommitCard(harness.pool, {
    experimentId, commitHash: topCommit, parentCommit: harness.baseCommit, jobId: null, branch: null, author: 'test',
    message: 'the best so far', summary: 'SCORE is 8, target 10', changedFiles: ['program.js'],
  });
  await upsertMetrics(harness.pool, experimentId, topCommit, null, [{ name: 'score', value: 8 }]);
  const elite = { experimentId, island: 0, jobId: null, source: 'ingestion' };
  await upsertElite(harness.pool, { ...elite, cellKey: '1,2', cell: [1, 2], descriptor: [0.15, 0.25], commitHash: harness.baseCommit, fitness: 1 });
  await upsertElite(harness.pool, { ...elite, cellKey: '6,0', cell: [6, 0], descriptor: [0.65, 0.05], commitHash: topCommit, fitness: 8 });
});

after(async () => {
  await harness.close();
  await server.close();
  await stopTestServer();
});

describe('feedback in the prompt', () => {
  it('gives the model the evaluator feedback, earlier attempts, the parent cell and the top programs', async () => {
    server.push({ reply: edit('raise SCORE to nine', 'const SCORE = 1;', 'const SCORE = 9;') });
    const { job, error } = await run();
    assert.equal(job.status, 'succeeded', String(error));
    const prompt = server.chatRequests().at(-1)!.body.messages.at(-1).content as string;

    // The parent's evaluator feedback: its summary and the end of its output, stderr included.
    assert.match(prompt, /## What the evaluator said about the parent\s+Evaluator summary: SCORE is 1, target 10/);
    assert.match(prompt, /progress: 100%[\s\S]*diagnostic: checked SCORE=1 against the target 10/);
    // The attempts from this parent, newest first: the failed edit with its precise reason, then the worse child.
    const attempts = prompt.slice(prompt.indexOf('# Earlier attempts from this parent'));
    assert.match(attempts, /FAILED \(try SCORE two\)|FAILED: .*could not be applied/);
    assert.match(attempts, /the SEARCH text was not found in the file \(not even ignoring whitespace\): it comes closest at line 3, but its line 1 is "const SCORE = 11;" where the file has "const SCORE = 1;" \(line 3\)/);
    assert.match(attempts, /scored score 0, WORSE than the parent by 1\.000: drop SCORE to zero/);
    assert.match(attempts, /evaluator summary: SCORE is 0, target 10/);
    assert.match(attempts, /diagnostic: checked SCORE=0/);
    assert.ok(attempts.indexOf('FAILED') < attempts.indexOf('WORSE'), 'newest first');
    // Where the parent sits.
    assert.match(prompt, /- island 0: cell \[1, 2\], descriptor \[0\.150, 0\.250\]; 1 better of 2 elites on the island/);
    // The archive's best program, with its diff from the parent.
    assert.match(prompt, new RegExp(`## Top program 1: commit ${topCommit.slice(0, 12)}, score 8`));
    assert.match(prompt, /SCORE is 8, target 10/);
    assert.match(prompt, /\+const SCORE = 8; \/\/ the archive best/);
    assert.doesNotMatch(prompt, /left out to fit/);

    // The prompt is kept as an artifact, feedback and all.
    assert.match((await getArtifacts(harness.pool, job.id)).prompt, /WORSE than the parent/);
  });

  it('fits a small WORKER_AGENT_PROMPT_MAX_TOKENS by priority: the parent feedback stays, the top programs go', async () => {
    const small = await createHarness({
      files: { 'program.js': PROGRAM },
      env: { WORKER_AGENT_BACKEND: 'openai', OPENAI_BASE_URL: server.url, WORKER_AGENT_PROMPT_MAX_TOKENS: '1000', WORKER_EVOLVE_PATHS: 'program.js' },
    });
    try {
      const sections = fitSections([
        { name: 'parent_feedback', items: ['x'.repeat(1000)], empty: '' },
        { name: 'attempts', items: ['a'.repeat(1500), 'b'.repeat(1500)], empty: '' },
        { name: 'top_programs', items: ['t'.repeat(2000)], empty: '(none)' },
      ], 3000);
      assert.equal(sections.get('parent_feedback')!.included, 1);
      assert.equal(sections.get('attempts')!.included, 2, 'the second attempt is cut short, not dropped');
      assert.match(sections.get('attempts')!.text, /more characters cut to fit the prompt budget/);
      assert.deepEqual([sections.get('top_programs')!.included, sections.get('top_programs')!.leftOut], [0, 1]);
      assert.match(sections.get('top_programs')!.text, /1 more left out to fit WORKER_AGENT_PROMPT_MAX_TOKENS/);
      assert.equal(small.settings.agent.promptMaxTokens, 1000);
    } finally {
      await small.close();
    }
  });

  it('keeps templates replaceable: a user template gets the new placeholders', async () => {
    const dir = path.join(tempDir('loreley-prompts-'), 'prompts');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'coding.md'), 'MY TEMPLATE\nfeedback={{parent_feedback}}\nattempts={{attempts}}\ncell={{parent_cell}}\ntop={{top_programs}}\n');
    const custom = await createHarness({
      files: { 'program.js': PROGRAM },
      env: { WORKER_AGENT_BACKEND: 'openai', OPENAI_BASE_URL: server.url, WORKER_AGENT_MAX_ATTEMPTS: '1', WORKER_EVOLVE_PATHS: 'program.js', WORKER_PROMPTS_DIR: dir },
    });
    try {
      server.push({ reply: edit('raise', 'const SCORE = 1;', 'const SCORE = 2;') });
      const agent = await createAgent({ settings: custom.settings, pool: custom.pool, logger: custom.logger });
      const { job } = await custom.runJob(agent);
      assert.equal(job.status, 'succeeded');
      const prompt = server.chatRequests().at(-1)!.body.messages.at(-1).content as string;
      assert.match(prompt, /^MY TEMPLATE\nfeedback=\(the evaluator gave no feedback on the parent\)\nattempts=\(none yet: this is the first attempt from this parent\)\ncell=\(the parent is not an elite of the archive\)\ntop=\(none besides the parent\)$/);
    } finally {
      await custom.close();
    }
  });
});
