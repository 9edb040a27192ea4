import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveExperiment, bestBranchName } from '../shared/experiment.ts';
import { initExample } from './init-example.ts';

/**
 * `npm start`: the bundled circle-packing example, end to end, on the embedded database with four
 * workers and a small budget; then the best score, its commit, and where the logs are.
 * LORELEY_DEMO_DIR (default .loreley/demo) keeps the experiment; LORELEY_DEMO_MAX_JOBS sets the budget.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
const directory = path.resolve(process.env.LORELEY_DEMO_DIR ?? path.join(root, '.loreley', 'demo'));
const maxJobs = Number(process.env.LORELEY_DEMO_MAX_JOBS ?? 40);
const workers = Number(process.env.LORELEY_DEMO_WORKERS ?? 4);
const supervisorBin = path.join(root, 'bin', 'loreley-supervisor.js');

if (!existsSync(path.join(directory, '.env'))) {
  initExample({ directory, example: 'circle-packing', maxJobs, force: true });
  process.stdout.write(`Created the circle-packing experiment in ${directory}\n`);
} else {
  process.stdout.write(`Using the experiment in ${directory} (delete it to start over)\n`);
}

process.stdout.write(`Running ${workers} workers and the scheduler to a budget of ${maxJobs} jobs...\n\n`);
const child = spawn(process.execPath, [supervisorBin, '--workers', String(workers), '--exit-when-done', '--max-jobs', String(maxJobs)], {
  cwd: directory,
  stdio: 'inherit',
  env: { ...process.env, LORELEY_DATA_DIR: path.join(directory, '.loreley') },
});
// The terminal sends Ctrl+C to the whole group; the supervisor drains on its own. A SIGTERM sent
// to this process alone is passed on.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => child.kill('SIGTERM'));
const code: number = await new Promise((resolve) => child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0))));

const experiment = resolveExperiment('circle-packing');
const logsDir = path.join(directory, 'logs', experiment.namespace);
const supervisorLogs = path.join(logsDir, 'supervisor', 'supervisor');
let summary: Record<string, unknown> | undefined;
if (existsSync(supervisorLogs)) {
  for (const file of readdirSync(supervisorLogs).sort()) {
    for (const line of readFileSync(path.join(supervisorLogs, file), 'utf8').split('\n')) {
      if (!line.includes('scheduler reports the run finished')) continue;
      try {
        summary = (JSON.parse(line) as { summary?: Record<string, unknown> }).summary ?? summary;
      } catch {
        // A torn line; the next one will do.
      }
    }
  }
}

process.stdout.write('\n');
if (summary) {
  const best = summary.best as { commit?: string; fitness?: number; metrics?: Record<string, number> } | null | undefined;
  const baseline = summary.baseline as { fitness?: number } | null | undefined;
  const jobs = summary.jobs as Record<string, number> | undefined;
  process.stdout.write(`Run finished: ${jobs ? Object.entries(jobs).map(([status, count]) => `${status} ${count}`).join(', ') : ''}\n`);
  if (best?.commit) {
    const sum = best.metrics?.sum_radii;
    process.stdout.write(
      `Best score:    combined_score ${best.fitness?.toFixed(4)}${sum !== undefined ? ` (sum of radii ${sum.toFixed(4)})` : ''}` +
        `${baseline?.fitness !== undefined ? `, baseline ${baseline.fitness.toFixed(4)}` : ''}\n`,
    );
    process.stdout.write(`Best commit:   ${best.commit} (branch ${bestBranchName(experiment)})\n`);
  }
  process.stdout.write(`Best program:  git -C ${path.join(directory, 'remote.git')} show ${bestBranchName(experiment)}:pack.js\n`);
  process.stdout.write(`Full summary:  ${JSON.stringify(summary)}\n`);
} else {
  process.stdout.write(`The run did not report a final summary (supervisor exit code ${code}).\n`);
}
process.stdout.write(`Logs (JSONL):  ${logsDir}/<role>/<worker id>/*.jsonl\n`);
process.stdout.write(`  e.g.         tail -f ${path.join(logsDir, 'worker', 'worker0001')}/*.jsonl\n`);
process.exit(code);
