import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getArtifacts, getCommitCard } from '../../src/shared/db/results.ts';
import { createAgent } from '../../src/worker/agents/index.ts';
import { CLAUDE_ALLOWED_TOOLS } from '../../src/worker/agents/cli.ts';
import { stopTestServer } from '../helpers/database.ts';
import { git, tempDir } from '../helpers/git.ts';
import { createHarness, type Harness } from './helpers/harness.ts';

/**
 * Stand-ins for the `codex` and `claude` executables: they record their arguments, standard input
 * and working directory, edit the evolvable file as a coding agent would, and end with the JSON
 * summary line.
 */
const STAND_IN = `
const fs = require('node:fs');
const path = require('node:path');
const stdin = fs.readFileSync(0, 'utf8');
const name = path.basename(process.argv[1], '.cjs');
fs.writeFileSync(path.join(process.env.RECORD_DIR, name + '.json'), JSON.stringify({
  argv: process.argv.slice(2), stdin, cwd: process.cwd(), promptFile: process.env.LORELEY_PROMPT_FILE, jobId: process.env.LORELEY_JOB_ID,
}));
const file = path.join(process.cwd(), 'program.js');
fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/SCORE = \\d+/, 'SCORE = 7'));
console.log('working…');
console.log(JSON.stringify({ summary: name + ' set the score to 7' }));
`;

const PROGRAM = '// EVOLVE-BLOCK-START\nconst SCORE = 1;\n// EVOLVE-BLOCK-END\n';
let bin: string;
let records: string;
const originalPath = process.env.PATH;
const harnesses: Harness[] = [];

function standIn(name: string): string {
  const script = path.join(bin, `${name}.cjs`);
  writeFileSync(script, STAND_IN);
  const executable = path.join(bin, name);
  writeFileSync(executable, `#!/bin/sh\nexec "${process.execPath}" "${script}" "$@"\n`);
  chmodSync(executable, 0o755);
  return executable;
}

before(() => {
  const root = tempDir('loreley-cli-agents-');
  bin = path.join(root, 'bin');
  records = path.join(root, 'records');
  mkdirSync(bin);
  mkdirSync(records);
  standIn('codex');
  standIn('my-claude');
  process.env.PATH = `${bin}${path.delimiter}${originalPath}`;
  process.env.RECORD_DIR = records;
});

after(async () => {
  process.env.PATH = originalPath;
  for (const harness of harnesses) await harness.close();
  await stopTestServer();
});

async function run(env: Record<string, string>) {
  const harness = await createHarness({ files: { 'program.js': PROGRAM }, env: { WORKER_EVOLVE_PATHS: 'program.js', SCHEDULER_GOAL: 'maximise SCORE', ...env } });
  harnesses.push(harness);
  const agent = await createAgent({ settings: harness.settings, pool: harness.pool, logger: harness.logger });
  return { harness, agent, ...(await harness.runJob(agent, { goal: 'maximise SCORE' })) };
}

describe('coding-agent CLI presets', () => {
  it('runs `codex exec --full-auto --json -` from PATH with the built prompt on stdin', async () => {
    const { harness, agent, job, outcome, error } = await run({ WORKER_AGENT_BACKEND: 'codex' });
    assert.equal(error, undefined, String(error));
    assert.equal(agent.name, 'codex');
    const record = JSON.parse(readFileSync(path.join(records, 'codex.json'), 'utf8'));
    assert.deepEqual(record.argv, ['exec', '--full-auto', '--json', '-']);
    assert.equal(record.jobId, job.id);
    assert.match(record.stdin, /maximise SCORE/);
    assert.match(record.stdin, /- program\.js \(change only the lines between EVOLVE-BLOCK-START and EVOLVE-BLOCK-END\)/);
    assert.match(record.stdin, /do not\s+commit/);
    assert.equal(path.basename(record.promptFile), 'prompt.md');
    assert.equal(job.status, 'succeeded');
    assert.equal(git(harness.remote, 'show', `${outcome!.commit}:program.js`), PROGRAM.replace('SCORE = 1', 'SCORE = 7').trimEnd());
    assert.equal((await getCommitCard(harness.pool, harness.settings.experiment.uuid, outcome!.commit))?.message, 'codex set the score to 7');
    const artifacts = await getArtifacts(harness.pool, job.id);
    assert.equal(artifacts.prompt, record.stdin);
    assert.match(artifacts.agent_output, /working…/);
  });

  it('runs `claude -p` with edits accepted, from WORKER_CLAUDE_BIN with extra arguments', async () => {
    const { agent, job, error } = await run({
      WORKER_AGENT_BACKEND: 'claude',
      WORKER_CLAUDE_BIN: path.join(bin, 'my-claude'),
      WORKER_CLAUDE_EXTRA_ARGS: '--model sonnet',
    });
    assert.equal(error, undefined, String(error));
    assert.equal(agent.name, 'claude');
    const record = JSON.parse(readFileSync(path.join(records, 'my-claude.json'), 'utf8'));
    assert.deepEqual(record.argv, ['-p', '--permission-mode', 'acceptEdits', '--allowedTools', CLAUDE_ALLOWED_TOOLS, '--output-format', 'json', '--model', 'sonnet']);
    assert.match(record.stdin, /# Goal\s+maximise SCORE/);
    assert.equal(path.basename(record.cwd), job.id);
    assert.equal(job.status, 'succeeded');
  });

  it('fails the job cleanly when the CLI is not installed', async () => {
    const { job, error } = await run({ WORKER_AGENT_BACKEND: 'codex', WORKER_CODEX_BIN: 'no-such-codex-binary' });
    assert.ok(error);
    assert.equal(job.status, 'failed');
    assert.match(job.lastError ?? '', /could not start/);
  });
});
