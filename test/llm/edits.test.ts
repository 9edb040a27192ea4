import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applySearchReplace, parseFullFiles, parseSearchReplace, replySummary } from '../../src/worker/llm/edits.ts';
import path from 'node:path';
import { collectEvolvable, regionViolation, skeleton, writable } from '../../src/worker/llm/evolve.ts';
import { createRemote } from '../helpers/git.ts';

describe('SEARCH/REPLACE parsing', () => {
  it('reads blocks with their paths, in order, and the summary line', () => {
    const reply = [
      'SUMMARY: tighten the packing',
      '',
      'pack.js',
      '<<<<<<< SEARCH',
      'const n = 26;',
      '=======',
      'const n = 27;',
      '>>>>>>> REPLACE',
      '',
      '```js',
      '`lib/util.js`',
      '<<<<<<< SEARCH',
      'a',
      'b',
      '=======',
      '>>>>>>> REPLACE',
      '```',
    ].join('\n');
    const parsed = parseSearchReplace(reply);
    assert.deepEqual(parsed.problems, []);
    assert.equal(parsed.summary, 'tighten the packing');
    assert.deepEqual(parsed.edits, [
      { path: 'pack.js', search: 'const n = 26;\n', replace: 'const n = 27;\n', index: 1 },
      { path: 'lib/util.js', search: 'a\nb\n', replace: '', index: 2 },
    ]);
  });

  it('takes the path from a fence info string, the previous block, or the only evolvable file', () => {
    const reply = '```js pack.js\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n<<<<<<< SEARCH\np\n=======\nq\n>>>>>>> REPLACE\n```';
    assert.deepEqual(parseSearchReplace(reply).edits.map((e) => e.path), ['pack.js', 'pack.js']);
    const bare = '<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE';
    assert.equal(parseSearchReplace(bare, 'only.js').edits[0].path, 'only.js');
    assert.match(parseSearchReplace(bare).problems[0], /no file path/);
  });

  it('reports unterminated blocks instead of guessing', () => {
    const parsed = parseSearchReplace('f.js\n<<<<<<< SEARCH\nx\n=======\ny\n');
    assert.equal(parsed.edits.length, 0);
    assert.match(parsed.problems[0], /no ">>>>>>> REPLACE"/);
    assert.match(parseSearchReplace('f.js\n<<<<<<< SEARCH\nx\n').problems[0], /no "=======" line/);
  });

  it('reads whole files in full mode', () => {
    const parsed = parseFullFiles('SUMMARY: all new\n\npack.js\n```javascript\nconst SCORE = 2;\n```\n\n**src/b.py**\n```python\nprint(1)\n```\n');
    assert.deepEqual(parsed.edits, [
      { path: 'pack.js', content: 'const SCORE = 2;\n' },
      { path: 'src/b.py', content: 'print(1)\n' },
    ]);
    assert.equal(parsed.summary, 'all new');
    assert.equal(parseFullFiles('```\nbody\n```', 'only.js').edits[0].path, 'only.js');
  });

  it('finds summaries in either form', () => {
    assert.equal(replySummary('<summary>use a hex grid</summary>\nrest'), 'use a hex grid');
    assert.equal(replySummary('**Summary:** shrink radii'), 'shrink radii');
    assert.equal(replySummary('nothing here'), undefined);
  });
});

describe('applying a SEARCH/REPLACE', () => {
  const file = 'function f() {\n  const a = 1;\n  const b = 2;   \n  return a + b;\n}\n';

  it('applies an exact match', () => {
    const result = applySearchReplace(file, '  const a = 1;\n', '  const a = 10;\n');
    assert.deepEqual(result, { ok: true, match: 'exact', content: file.replace('const a = 1', 'const a = 10') });
  });

  it('tolerates trailing whitespace differences', () => {
    const result = applySearchReplace(file, '  const b = 2;\n  return a + b;\n', '  const b = 3;\n  return a * b;\n');
    assert.ok(result.ok);
    assert.equal(result.match, 'trailing-whitespace');
    assert.equal(result.content, 'function f() {\n  const a = 1;\n  const b = 3;\n  return a * b;\n}\n');
  });

  it('tolerates indentation differences and re-indents the replacement', () => {
    const result = applySearchReplace(file, '\nconst a = 1;\nconst b = 2;\n\n', 'const a = 5;\nif (a) {\n  log(a);\n}\n');
    assert.ok(result.ok);
    assert.equal(result.match, 'indentation');
    assert.equal(result.content, 'function f() {\n  const a = 5;\n  if (a) {\n    log(a);\n  }\n  return a + b;\n}\n');
  });

  it('refuses ambiguous and missing matches with a reason', () => {
    const twice = 'x = 1\ny = 2\nx = 1\n';
    const ambiguous = applySearchReplace(twice, 'x = 1\n', 'x = 3\n');
    assert.equal(ambiguous.ok, false);
    assert.match(!ambiguous.ok ? ambiguous.reason : '', /matches 2 places/);
    const missing = applySearchReplace(file, 'const zzz = 0;\n', '');
    assert.equal(missing.ok, false);
    assert.match(!missing.ok ? missing.reason : '', /not found/);
  });

  it('creates a new file only from an empty SEARCH', () => {
    assert.deepEqual(applySearchReplace(undefined, '', 'new\n'), { ok: true, match: 'create', content: 'new\n' });
    assert.equal(applySearchReplace(file, '', 'x').ok, false);
    assert.equal(applySearchReplace(undefined, 'x\n', 'y\n').ok, false);
  });

  it('deletes lines when the replacement is empty', () => {
    const result = applySearchReplace('a\nb\nc\n', 'b \n', '');
    assert.deepEqual(result, { ok: true, match: 'trailing-whitespace', content: 'a\nc\n' });
  });
});

describe('evolve-block regions', () => {
  const marked = 'const fixed = 1;\n// EVOLVE-BLOCK-START\nconst SCORE = 1;\n// EVOLVE-BLOCK-END\nmodule.exports = fixed;\n';

  it('allows changes between the markers only', () => {
    assert.equal(regionViolation(marked, marked.replace('SCORE = 1', 'SCORE = 2\nconst extra = 3;')), undefined);
    assert.match(regionViolation(marked, marked.replace('fixed = 1', 'fixed = 2')) ?? '', /outside the EVOLVE-BLOCK-START/);
    assert.match(regionViolation(marked, marked.replace('// EVOLVE-BLOCK-END\n', '')) ?? '', /markers/);
    assert.match(regionViolation(marked, marked.replace('const SCORE = 1;', 'const SCORE = 1;\n// EVOLVE-BLOCK-END\nhack();\n// EVOLVE-BLOCK-START')) ?? '', /outside/);
  });

  it('treats a file without markers as evolvable throughout', () => {
    assert.equal(regionViolation('a\n', 'b\n'), undefined);
    assert.equal(skeleton(marked), 'const fixed = 1;\n// EVOLVE-BLOCK-START\n// EVOLVE-BLOCK-END\nmodule.exports = fixed;');
  });
});

describe('evolvable files', () => {
  const { root } = createRemote({
    'src/a.js': '// EVOLVE-BLOCK-START\nx\n// EVOLVE-BLOCK-END\n',
    'src/b.js': 'plain\n',
    'lib/c.py': 'y = 1\n',
    'docs/readme.md': 'text\n',
  });
  const seed = path.join(root, 'seed');

  it('without globs, takes the tracked files that carry markers', async () => {
    const set = await collectEvolvable(seed, []);
    assert.deepEqual(set.files.map((f) => [f.path, f.marked]), [['src/a.js', true]]);
    assert.equal(writable(set, 'src/a.js', seed).ok, true);
    const refused = writable(set, 'src/b.js', seed);
    assert.match(!refused.ok ? refused.reason : '', /src\/b\.js is not evolvable; only the EVOLVE-BLOCK-START regions of src\/a\.js may change/);
  });

  it('with globs, takes the matching files and allows new ones that match', async () => {
    const set = await collectEvolvable(seed, ['src/**/*.js', 'lib/*.py']);
    assert.deepEqual(set.files.map((f) => [f.path, f.marked]), [['lib/c.py', false], ['src/a.js', true], ['src/b.js', false]]);
    assert.deepEqual(writable(set, 'src/new/d.js', seed), { ok: true, existing: undefined });
    assert.equal(writable(set, 'docs/readme.md', seed).ok, false);
  });
});

describe('why a SEARCH does not apply', () => {
  it('names the closest place and the first line that differs there', () => {
    const content = 'a = 1\nfunction f() {\n  const radius = 0.1;\n  return radius;\n}\n';
    const result = applySearchReplace(content, 'function f() {\n  const radius = 0.2;\n  return radius;\n', 'x\n');
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.reason : '', /it comes closest at line 2, but its line 2 is "const radius = 0\.2;" where the file has "const radius = 0\.1;" \(line 3\)/);
    const nothing = applySearchReplace(content, 'zzzz qqqq\n', '');
    assert.match(!nothing.ok ? nothing.reason : '', /nothing in the file resembles it \(it starts with "zzzz qqqq"\)/);
  });
});
