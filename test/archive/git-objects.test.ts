import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { GitObjects } from '../../src/scheduler/embedding/git-objects.ts';
import { git, tempDir } from '../helpers/git.ts';
import { waitFor } from '../helpers/processes.ts';

/** The embedding's object reads (two long-lived cat-file processes) against git's own commands. */

function write(root: string, files: Record<string, string | null>): string {
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(root, name);
    if (content === null) rmSync(file, { recursive: true, force: true });
    else {
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, content);
    }
  }
  git(root, 'add', '--all');
  git(root, 'commit', '--quiet', '--allow-empty', '-m', 'x');
  return git(root, 'rev-parse', 'HEAD');
}

function diffTree(root: string, from: string, to: string): string[] {
  const out = execFileSync('git', ['diff-tree', '-r', '-z', '--no-renames', '--raw', from, to], { cwd: root, encoding: 'utf8' });
  const parts = out.split('\0');
  const lines: string[] = [];
  for (let i = 0; i + 1 < parts.length; i += 2) {
    const [oldMode, newMode, oldBlob, newBlob] = parts[i].slice(1).split(' ');
    lines.push(`${parts[i + 1]} ${Number(oldMode)} ${Number(newMode)} ${oldBlob} ${newBlob}`);
  }
  return lines.sort();
}

describe('git objects', () => {
  const root = tempDir();
  git(root, 'init', '--quiet', '--initial-branch=main');
  const first = write(root, {
    'a.js': 'a', 'dir/b.js': 'b', 'dir/deep/c.js': 'c', 'dir/deep/d.js': 'd', 'same/e.js': 'e', 'gone/f.js': 'f', 'file-then-dir': 'x', 'name with space.js': 's',
  });
  const second = write(root, {
    'a.js': 'a2', 'dir/deep/c.js': null, 'dir/deep/new.js': 'n', 'gone': null, 'file-then-dir': null, 'file-then-dir/inside.js': 'i', 'added/g.js': 'g',
  });
  const objects = new GitObjects(root);

  test('a diff lists what `git diff-tree -r --no-renames` lists, type changes included', async () => {
    const ours = (await objects.diff(first, second)).map((c) => `${c.path} ${Number(c.oldMode)} ${Number(c.newMode)} ${c.oldBlob} ${c.newBlob}`).sort();
    assert.deepEqual(ours, diffTree(root, first, second));
    assert.deepEqual(await objects.diff(second, second), []);
  });

  test('a listing holds every regular file with its blob, as `git ls-tree -r`', async () => {
    const listed = execFileSync('git', ['ls-tree', '-r', '-z', second], { cwd: root, encoding: 'utf8' })
      .split('\0').filter(Boolean).map((record) => `${record.split('\t')[1]} ${record.split(' ')[2].split('\t')[0]}`).sort();
    assert.deepEqual((await objects.listFiles(second)).map((entry) => `${entry.path} ${entry.oid}`).sort(), listed);
  });

  test('files at a commit, sizes and contents; missing ones are left out, not errors', async () => {
    assert.equal(await objects.fileAt(second, 'a.js'), 'a2');
    assert.equal(await objects.fileAt(second, 'no-such-file'), undefined);
    assert.equal(await objects.fileAt(second, 'name with space.js'), 's');
    const blob = git(root, 'rev-parse', `${second}:a.js`);
    const absent = 'f'.repeat(40);
    assert.deepEqual([...(await objects.sizes([blob, absent]))], [[blob, 2]]);
    assert.deepEqual([...(await objects.read([blob, absent]))].map(([oid, content]) => [oid, content.toString()]), [[blob, 'a2']]);
  });

  test('concurrent requests share the processes and each gets its own answers', async () => {
    const names = ['a.js', 'dir/b.js', 'dir/deep/d.js', 'same/e.js', 'added/g.js'];
    const answers = await Promise.all(names.flatMap((name) => [objects.fileAt(second, name), objects.fileAt(first, name)]));
    assert.deepEqual(answers, ['a2', 'a', 'b', 'b', 'd', 'd', 'e', 'e', 'g', undefined]);
  });

  test('objects committed after the processes started are found', async () => {
    const third = write(root, { 'late.js': 'late' });
    assert.equal(await objects.fileAt(third, 'late.js'), 'late');
  });

  test('a cat-file process that dies fails its request and is started again for the next', async () => {
    const pids = () => execFileSync('pgrep', ['-P', String(process.pid), '-x', 'git'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
    await objects.fileAt(second, 'a.js');
    for (const pid of pids()) process.kill(pid, 'SIGKILL');
    // The next request either meets the dead process (and fails) or a new one; then it works again.
    await objects.fileAt(second, 'a.js').catch(() => undefined);
    assert.equal(await objects.fileAt(second, 'a.js'), 'a2');
  });

  test('idle processes exit after idleMs, and the next request starts them again', async () => {
    const idle = new GitObjects(root, { idleMs: 200 });
    const catFiles = () => execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' }).split('\n').filter((line) => line.includes('cat-file')).length;
    const before = catFiles();
    assert.equal(await idle.fileAt(second, 'a.js'), 'a2');
    assert.deepEqual([...(await idle.sizes([git(root, 'rev-parse', `${second}:a.js`)]))].map(([, size]) => size), [2]);
    assert.equal(catFiles(), before + 2);
    await waitFor('the idle pair to exit', () => catFiles() === before, 10_000, 50);
    assert.equal(await idle.fileAt(first, 'a.js'), 'a');
  });
});
