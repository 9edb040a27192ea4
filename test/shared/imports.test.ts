import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

/**
 * The module graph of src/: no module imports itself through others, type-only imports included
 * (knip's cycle check skips those), and the roles (supervisor, worker, scheduler) share code only
 * through src/shared, so each can be read, and loaded, alone.
 */

const SRC = path.resolve('src');
const IMPORT = /(?:^|\n)\s*(?:import|export)\s(?:type\s)?[^'";]*?from\s+'(\.{1,2}\/[^']+)'|import\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;

function sources(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) return sources(full);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [full] : [];
  });
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(IMPORT)].map((match) => path.resolve(path.dirname(file), match[1] ?? match[2]));
}

test('src/ has no import cycle, type-only imports included', () => {
  const files = sources(SRC);
  const graph = new Map(files.map((file) => [file, importsOf(file).filter((target) => target.startsWith(SRC))]));
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'visiting');
    stack.push(file);
    for (const next of graph.get(file) ?? []) {
      if (state.get(next) === 'visiting') cycles.push([...stack.slice(stack.indexOf(next)), next].map((f) => path.relative(SRC, f)).join(' → '));
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of files) if (!state.has(file)) visit(file);
  assert.ok(files.length > 50, `found the sources (${files.length})`);
  assert.deepEqual(cycles, []);
});

test('the roles import only src/shared, never each other', () => {
  const roles = ['supervisor', 'worker', 'scheduler'];
  const crossings: string[] = [];
  for (const file of sources(SRC)) {
    const role = path.relative(SRC, file).split(path.sep)[0];
    if (!roles.includes(role)) continue;
    for (const target of importsOf(file)) {
      const targetRole = path.relative(SRC, target).split(path.sep)[0];
      if (roles.includes(targetRole) && targetRole !== role) crossings.push(`${path.relative(SRC, file)} → ${path.relative(SRC, target)}`);
    }
  }
  assert.deepEqual(crossings, []);
});
