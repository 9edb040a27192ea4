import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveExperiment, bestBranchName } from '../shared/experiment.ts';
import { initExample } from './init-example.ts';

/**
 * `npm start`: the bundled circle-packing example, end to end, on the embedded database with four
 * workers and a small budget; the supervisor ends it with the run's summary (best score, its commit,
 * jobs, cost, where the logs and the report are).
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

// The supervisor printed the run's summary (best score and commit, jobs, cost, where the logs and
// the report are); the demo adds only what is particular to this example.
const experiment = resolveExperiment('circle-packing');
if (code === 0) {
  process.stdout.write(`  program   git -C ${path.join(directory, 'remote.git')} show ${bestBranchName(experiment)}:pack.js\n`);
  process.stdout.write(`  loreley   run the commands above in ${directory} as: ${process.execPath} ${path.join(root, 'bin', 'loreley.js')} …\n`);
}
process.exit(code);
