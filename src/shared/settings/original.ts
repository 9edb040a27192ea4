import type { Env } from './reader.ts';

/**
 * Settings written for the original Python Loreley. A `.env` made for it keeps working: every
 * original setting with a counterpart here is read under its original name too (with a one-line
 * notice naming the new one), its value converted where the unit differs; the original's
 * `DB_HOST`/`DB_PORT`/`DB_USER`/`DB_PASSWORD`/`DB_NAME` become a `DATABASE_URL`. Original settings
 * with no counterpart get a notice saying so. Any other key that starts with one of Loreley's
 * prefixes and means nothing here is named in a warning with the closest known setting, so a typo
 * is not silently ignored.
 */

interface Alias {
  readonly to: string;
  /** From the original's unit to ours. */
  readonly convert?: (value: string) => string;
  readonly note?: string;
}

/** Original name → our name. */
export const ORIGINAL_ALIASES: Readonly<Record<string, Alias>> = Object.freeze({
  WORKER_EVOLUTION_GLOBAL_GOAL: { to: 'SCHEDULER_GOAL' },
  WORKER_EVOLUTION_COMMIT_AUTHOR: { to: 'WORKER_GIT_AUTHOR_NAME' },
  WORKER_EVOLUTION_COMMIT_EMAIL: { to: 'WORKER_GIT_AUTHOR_EMAIL' },
  WORKER_EXPERIMENT_ID: { to: 'EXPERIMENT_ID' },
  WORKER_CODING_CODEX_BIN: { to: 'WORKER_CODEX_BIN' },
  WORKER_CODING_TIMEOUT_SECONDS: { to: 'WORKER_AGENT_TIMEOUT_SECONDS' },
  WORKER_CODING_MAX_ATTEMPTS: { to: 'WORKER_AGENT_MAX_ATTEMPTS' },
  WORKER_PLANNING_CODEX_BIN: { to: 'WORKER_CODEX_BIN' },
  MAPELITES_PREPROCESS_MAX_FILE_SIZE_KB: {
    to: 'MAPELITES_EMBEDDING_MAX_FILE_BYTES',
    convert: (kb) => (Number.isFinite(Number(kb)) ? String(Math.round(Number(kb) * 1024)) : kb),
    note: 'KiB converted to bytes',
  },
  MAPELITES_PREPROCESS_ALLOWED_EXTENSIONS: {
    to: 'MAPELITES_EMBEDDING_EXTENSIONS',
    // pydantic reads a list as JSON (`[".py", ".js"]`); ours is comma-separated.
    convert: (value) => {
      try {
        const parsed: unknown = JSON.parse(value);
        if (Array.isArray(parsed)) return parsed.map(String).join(',');
      } catch {
        // Already comma-separated.
      }
      return value;
    },
  },
  MAPELITES_FEATURE_TRUNCATION_K: { to: 'MAPELITES_DIMENSION_REDUCTION_CLIP' },
  DB_POOL_SIZE: { to: 'DATABASE_POOL_MAX' },
});

/** Original settings that mean nothing here, and why, so the notice helps rather than puzzles. */
const ORIGINAL_WITHOUT_COUNTERPART: ReadonlyArray<readonly [RegExp, string]> = [
  [/^TASKS_REDIS_/, 'the queue is pg-boss in the same PostgreSQL; there is no Redis'],
  [/^WORKER_REPO_(WORKTREE_RANDOMIZE|WORKTREE_RANDOM_SUFFIX_LEN)$/, 'each job gets its own worktree under <WORKER_REPO_WORKTREE>-worktrees/'],
  [/^WORKER_REPO_(GIT_BIN|FETCH_DEPTH|CLEAN_EXCLUDES|JOB_BRANCH_PREFIX|ENABLE_LFS|JOB_BRANCH_TTL_HOURS)$/, 'git is used with fixed, documented behaviour here'],
  [/^WORKER_(PLANNING|CODING)_/, 'the agent is WORKER_AGENT_BACKEND (openai, codex, claude or a command); see docs/llm.md'],
  [/^WORKER_CURSOR_/, 'there is no Cursor backend; see WORKER_AGENT_BACKEND'],
  [/^WORKER_EVALUATOR_(PLUGIN|PYTHON_PATHS)$/, 'the evaluator is a command, WORKER_EVALUATOR_COMMAND'],
  [/^WORKER_EVALUATOR_MAX_METRICS$/, 'the limit is fixed at 64 metrics'],
  [/^WORKER_EVOLUTION_COMMIT_/, 'the commit message is the agent\'s summary, not a separate model call'],
  [/^MAPELITES_PREPROCESS_/, 'files are embedded as they are (no preprocessing)'],
  [/^MAPELITES_(ARCHIVE_LEARNING_RATE|ARCHIVE_THRESHOLD_MIN|ARCHIVE_EPSILON|ARCHIVE_QD_SCORE_OFFSET)$/, 'the archive keeps a strictly better elite per cell (plain MAP-Elites)'],
  [/^MAPELITES_(REPO_STATE_|FILE_EMBEDDING_CACHE_BACKEND|DEFAULT_ISLAND_ID|FEATURE_CLIP|FEATURE_NORMALIZATION_WARMUP_SAMPLES|DIMENSION_REDUCTION_HISTORY_SIZE|DIMENSION_REDUCTION_PENULTIMATE_NORMALIZE|SAMPLER_NEIGHBOR_RADIUS|SAMPLER_FALLBACK_SAMPLE_SIZE|SAMPLER_DEFAULT_PRIORITY|CODE_EMBEDDING_MAX_CHUNKS_PER_COMMIT|CODE_EMBEDDING_MAX_RETRIES|CODE_EMBEDDING_RETRY_BACKOFF_SECONDS|CHUNK_BOUNDARY_KEYWORDS)/, 'fixed here; see docs/scheduler.md'],
  [/^SCHEDULER_STARTUP_APPROVE$/, 'the scheduler starts without a confirmation step'],
];

/** Keys starting with these are Loreley's: one that is not a known setting is probably a typo. */
export const OWN_PREFIXES = ['WORKER_', 'SCHEDULER_', 'MAPELITES_', 'TASKS_', 'SUPERVISOR_', 'LOG_'] as const;

/** Set by a supervisor for its children, not by users. */
const INTERNAL = new Set(['LOG_CONSOLE_PRETTY']);

/**
 * The environment with original names translated, and the notices to show. A new name set too
 * wins over the original one (which is then reported as ignored).
 */
export function translateOriginalSettings(env: Env): { env: Env; notices: string[] } {
  const out: Record<string, string | undefined> = { ...env };
  const notices: string[] = [];
  const present = (name: string): boolean => (env[name] ?? '').trim() !== '';
  for (const [original, alias] of Object.entries(ORIGINAL_ALIASES)) {
    if (!present(original)) continue;
    if (present(alias.to)) {
      notices.push(`${original} (the original Loreley's name) is ignored: ${alias.to} is set too`);
      continue;
    }
    out[alias.to] = alias.convert ? alias.convert(env[original]!.trim()) : env[original];
    notices.push(`${original} is the original Loreley's name for ${alias.to}: read as ${alias.to}${alias.note ? ` (${alias.note})` : ''}; rename it to silence this notice`);
  }
  const dbParts = ['DB_HOST', 'DB_PORT', 'DB_USER', 'DB_PASSWORD', 'DB_NAME'].filter(present);
  if (dbParts.length > 0) {
    if (present('DATABASE_URL')) {
      notices.push(`${dbParts.join(', ')} (the original Loreley's database settings) ignored: DATABASE_URL is set`);
    } else {
      // The original's defaults for the parts not given.
      const user = encodeURIComponent(env.DB_USER?.trim() || 'loreley');
      const password = encodeURIComponent(env.DB_PASSWORD?.trim() || 'loreley');
      const host = env.DB_HOST?.trim() || 'localhost';
      out.DATABASE_URL = `postgresql://${user}:${password}@${host.includes(':') ? `[${host}]` : host}:${env.DB_PORT?.trim() || '5432'}/${encodeURIComponent(env.DB_NAME?.trim() || 'loreley')}`;
      notices.push(`${dbParts.join(', ')} are the original Loreley's database settings: combined into DATABASE_URL; set DATABASE_URL instead to silence this notice`);
    }
  }
  return { env: out, notices };
}

/** Levenshtein distance, for naming the closest known setting. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length];
}

export function closestSetting(name: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = distance(name, candidate);
    if (d < bestDistance || (d === bestDistance && best !== undefined && candidate < best)) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * One line for each key with one of our prefixes that no setting reads: an original setting with
 * no counterpart (said so, with why), or an unknown key (with the closest known setting).
 */
export function unknownSettingWarnings(env: Env, known: ReadonlySet<string>): string[] {
  const warnings: string[] = [];
  const candidates = [...known].filter((name) => OWN_PREFIXES.some((prefix) => name.startsWith(prefix)));
  for (const key of Object.keys(env).sort()) {
    if (!OWN_PREFIXES.some((prefix) => key.startsWith(prefix))) continue;
    if (known.has(key) || INTERNAL.has(key) || key in ORIGINAL_ALIASES) continue;
    const original = ORIGINAL_WITHOUT_COUNTERPART.find(([pattern]) => pattern.test(key));
    if (original) {
      warnings.push(`${key} is a setting of the original Loreley with no counterpart here (${original[1]}): ignored`);
      continue;
    }
    const closest = closestSetting(key, candidates);
    warnings.push(`${key} is not a Loreley setting: ignored${closest ? ` (did you mean ${closest}?)` : ''}`);
  }
  return warnings;
}
