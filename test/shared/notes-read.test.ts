import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { NOTES_REF, readNotes, writeNotes } from '../../src/shared/notes.ts';
import { git, tempDir } from '../helpers/git.ts';

/**
 * The scheduler reads the notes of a few commits every tick. It looks them up by path (every
 * fan-out depth at once) instead of listing every note the experiment ever wrote; what it reads
 * must be what the listing gives, whatever the tree's fan-out.
 */

/** A repository with `n` commits (one fast-import), newest first. */
function repositoryWithCommits(n: number): { directory: string; commits: string[] } {
  const directory = tempDir('loreley-notes-read-');
  git(directory, 'init', '--quiet');
  let stream = '';
  for (let i = 1; i <= n; i += 1) {
    const text = `${i}\n`;
    stream += `commit refs/heads/main\ncommitter T <t@t> ${1_700_000_000 + i} +0000\ndata 2\nc\nM 644 inline f.txt\ndata ${text.length}\n${text}\n`;
  }
  execFileSync('git', ['fast-import', '--quiet'], { cwd: directory, input: `${stream}done\n` });
  return { directory, commits: git(directory, 'rev-list', 'refs/heads/main').split('\n') };
}

for (const count of [10, 300]) {
  test(`notes of a few commits read by path are what the listing gives (${count} notes: fan-out ${count < 256 ? 0 : 1})`, async () => {
    const { directory, commits } = repositoryWithCommits(count + 1);
    const noted = commits.slice(0, count);
    await writeNotes(directory, new Map(noted.map((commit, i) => [commit, `{"n":${i}}\n`])), 'notes');
    const depth = git(directory, 'ls-tree', NOTES_REF).split('\n')[0].split('\t')[1].length === 2 ? 1 : 0;
    assert.equal(depth, count < 256 ? 0 : 1, 'the tree has the fan-out this case is about');

    const all = await readNotes(directory);
    assert.equal(all.size, count);
    const unnoted = commits[count];
    const wanted = new Set([noted[0], noted[count - 1], noted[Math.floor(count / 2)], unnoted]);
    const some = await readNotes(directory, wanted);
    assert.deepEqual(some, new Map([noted[0], noted[count - 1], noted[Math.floor(count / 2)]].map((commit) => [commit, all.get(commit)!])));
    assert.equal(some.has(unnoted), false, 'a commit without a note has none');
  });
}

test('reading by path before any note exists finds none', async () => {
  const { directory, commits } = repositoryWithCommits(2);
  assert.equal((await readNotes(directory, new Set(commits))).size, 0);
});
