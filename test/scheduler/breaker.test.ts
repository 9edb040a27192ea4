import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { breakerDecision, classifyFailure } from '../../src/scheduler/breaker.ts';

/** The circuit breaker's decisions alone: no database, no clock. Errors are the worker's own wording. */

const failed = (lastError: string) => ({ status: 'failed', lastError });
const succeeded = { status: 'succeeded', lastError: null };

const EVALUATOR_MISSING = 'evaluator "/opt/nope/evaluate" could not start: spawn /opt/nope/evaluate ENOENT';
const AGENT_MISSING = 'agent command "codex" could not start: spawn codex ENOENT';
const GARBAGE = 'evaluator "node" output is invalid: output is not a JSON object (last line: "Segmentation fault")';
const ENDPOINT = 'coding call failed: model "gpt-4o-mini" at https://api.openai.com/v1 answered HTTP 401: Incorrect API key provided';
const UNREACHABLE = 'coding call failed: cannot reach model "qwen" at http://127.0.0.1:11434/v1: connect ECONNREFUSED 127.0.0.1:11434';
const CRASH = 'evaluator "node" exited with code 1: TypeError: Cannot read properties of undefined (reading \'x\')';
const NO_EDIT = "the model's edits could not be applied after 3 replies: block 1 (pack.js): the SEARCH text was not found";

describe('failure kinds', () => {
  it('tells systemic failures from ordinary candidate failures', () => {
    assert.equal(classifyFailure(EVALUATOR_MISSING), 'evaluator-start');
    assert.equal(classifyFailure('evaluator "sh" exited with code 127: sh: 1: evaluate: not found'), 'evaluator-start');
    assert.equal(classifyFailure(AGENT_MISSING), 'agent-start');
    assert.equal(classifyFailure(GARBAGE), 'evaluator-output');
    assert.equal(classifyFailure(ENDPOINT), 'model-endpoint');
    assert.equal(classifyFailure(UNREACHABLE), 'model-endpoint');
    assert.equal(classifyFailure('agent command "claude" exited with code 1: … (claude: API Error: 401 {"type":"authentication_error"})'), 'model-endpoint');
    assert.equal(classifyFailure('no evolvable code: set WORKER_EVOLVE_PATHS to globs of the files to evolve'), 'no-evolvable-code');
    // Ordinary: the candidate crashed, was invalid, the edit did not apply, the agent ran long, nothing changed.
    assert.equal(classifyFailure(CRASH), undefined);
    assert.equal(classifyFailure(NO_EDIT), undefined);
    assert.equal(classifyFailure('evaluator "node" timed out after 600s'), undefined);
    assert.equal(classifyFailure('coding call failed: the agent ran past WORKER_AGENT_TIMEOUT_SECONDS=1800'), undefined);
    assert.equal(classifyFailure('the command agent made no change to the code'), undefined);
    assert.equal(classifyFailure(null), undefined);
  });
});

describe('breaker decision', () => {
  it('trips when the last K jobs all failed for the same systemic reason, naming it', () => {
    const decision = breakerDecision(Array.from({ length: 5 }, () => failed(EVALUATOR_MISSING)), 5);
    assert.equal(decision.tripped, true);
    assert.ok(decision.tripped);
    assert.equal(decision.kind, 'evaluator-start');
    assert.match(decision.reason, /the last 5 jobs all failed because the evaluator could not start \(SCHEDULER_MAX_CONSECUTIVE_FAILURES=5\); the latest: evaluator "\/opt\/nope\/evaluate" could not start/);
  });

  it('does not trip on fewer than K, on ordinary failures, on a mix of kinds, or across a success', () => {
    assert.equal(breakerDecision(Array.from({ length: 4 }, () => failed(AGENT_MISSING)), 5).tripped, false);
    assert.equal(breakerDecision(Array.from({ length: 9 }, () => failed(CRASH)), 5).tripped, false);
    assert.equal(breakerDecision([failed(ENDPOINT), failed(ENDPOINT), failed(GARBAGE), failed(ENDPOINT), failed(ENDPOINT)], 5).tripped, false);
    assert.equal(breakerDecision([failed(ENDPOINT), failed(ENDPOINT), succeeded, failed(ENDPOINT), failed(ENDPOINT), failed(ENDPOINT)], 5).tripped, false);
    // Only the newest K count: old failures before a success do not.
    assert.equal(breakerDecision([succeeded, ...Array.from({ length: 8 }, () => failed(ENDPOINT))], 5).tripped, false);
    // One ordinary failure among them is enough to keep going.
    assert.equal(breakerDecision([failed(UNREACHABLE), failed(UNREACHABLE), failed(CRASH), failed(UNREACHABLE), failed(UNREACHABLE)], 5).tripped, false);
  });

  it('is off at 0, and trips at 1 on the first systemic failure', () => {
    assert.equal(breakerDecision([failed(EVALUATOR_MISSING)], 0).tripped, false);
    assert.equal(breakerDecision([failed(EVALUATOR_MISSING)], 1).tripped, true);
  });
});
