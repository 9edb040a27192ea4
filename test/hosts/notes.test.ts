import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fetchNotes, NOTES_REF, pushNotes, readNotes, writeNotes } from '../../src/shared/notes.ts';
import { experimentRecords, mergeNote } from '../../src/scheduler/notes-record.ts';
import { createRemote, git, tempDir } from '../helpers/git.ts';

function clone(remote: string, name: string): string {
  const directory = path.join(tempDir('loreley-notes-'), name);
  git(path.dirname(directory), 'clone', '--quiet', remote, directory);
  return directory;
}

function commitIn(directory: string, file: string): string {
  git(directory, 'commit', '--quiet', '--allow-empty', '-m', file);
  const hash = git(directory, 'rev-parse', 'HEAD');
  git(directory, 'push', '--quiet', 'origin', `HEAD:refs/heads/${file}`);
  return hash;
}

const candidate = (experiment: string, commit: string, job: string, seq: number) =>
  JSON.stringify({ v: 1, type: 'candidate', experiment, commit, job: { id: job, kind: 'evolution', base: 'x', inspirations: [], goal: null, payload: {}, island: 0, priority: 0, attempts: 1, worker: null, host: null, createdAt: '2026-01-01T00:00:00.000Z', startedAt: null, finishedAt: null }, card: null, metrics: [], ingestion: { seq, status: 'ingested', delta: null, cell: null, reason: null, at: null } });

test('two writers pushing notes at once both land: fetch, cat_sort_uniq merge, push again', async () => {
  const { remote, commit: root } = createRemote({ 'a.txt': 'a\n' });
  const a = clone(remote, 'a');
  const b = clone(remote, 'b');
  const commitA = commitIn(a, 'from-a');
  const commitB = commitIn(b, 'from-b');
  git(a, 'fetch', '--quiet', 'origin');
  git(b, 'fetch', '--quiet', 'origin');

  // Both annotate their own commit and the shared root, then push at the same moment, several rounds.
  for (let round = 0; round < 3; round++) {
    await writeNotes(a, new Map([[commitA, candidate('e1', commitA, `a${round}`, round * 2 + 1)], [root, mergeNote((await readNotes(a)).get(root), [`{"round":${round},"from":"a"}`])]]), `a ${round}`);
    await writeNotes(b, new Map([[commitB, candidate('e1', commitB, `b${round}`, round * 2 + 2)], [root, mergeNote((await readNotes(b)).get(root), [`{"round":${round},"from":"b"}`])]]), `b ${round}`);
    await Promise.all([pushNotes(a), pushNotes(b)]);
  }

  const reader = clone(remote, 'reader');
  assert.equal(await fetchNotes(reader), true);
  const notes = await readNotes(reader);
  const rootLines = notes.get(root)!.trim().split('\n');
  for (let round = 0; round < 3; round++) {
    assert.ok(rootLines.includes(`{"round":${round},"from":"a"}`), `a's root line of round ${round} survived`);
    assert.ok(rootLines.includes(`{"round":${round},"from":"b"}`), `b's root line of round ${round} survived`);
  }
  // The last writer's view of its own commit is a union of every round's record.
  const records = experimentRecords(notes, 'e1');
  assert.ok(records.candidates.length >= 2);
  assert.deepEqual(new Set(records.candidates.map((c) => c.commit)), new Set([commitA, commitB]));
  assert.notEqual(git(remote, 'rev-parse', NOTES_REF), '');
});

test('a remote without notes reads as none', async () => {
  const { remote } = createRemote({ 'a.txt': 'a\n' });
  const directory = clone(remote, 'empty');
  assert.equal(await fetchNotes(directory), false);
  assert.equal((await readNotes(directory)).size, 0);
  await pushNotes(directory); // nothing to push: a no-op
});

test('refit records: one experiment\'s, in the order the run applied them, a line written twice counted once', () => {
  const refit = (experiment: string, ingestions: number, order: number) =>
    JSON.stringify({ v: 1, type: 'refit', experiment, ingestions, order, model: { kind: 'pca', means: [0.5], components: [[1]], stdevs: [1], samples: 9, centroids: [[0.25], [0.75]] } });
  const notes = new Map([
    ['c1', mergeNote(undefined, [candidate('e1', 'c1', 'j1', 8), refit('e1', 8, 3)])],
    ['c2', mergeNote(undefined, [refit('e1', 4, 2), refit('e2', 4, 1), refit('e1', 8, 5)])],
    ['c3', mergeNote(undefined, [refit('e1', 4, 2), 'not ours', refit('e1', 0, 1)])],
  ]);
  const { refits, candidates } = experimentRecords(notes, 'e1');
  assert.deepEqual(refits.map((r) => [r.ingestions, r.order]), [[0, 1], [4, 2], [8, 3], [8, 5]]);
  assert.deepEqual(refits[0].model.centroids, [[0.25], [0.75]]);
  assert.equal(candidates.length, 1);
});
