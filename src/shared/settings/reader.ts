/**
 * Reads typed values out of an environment map and collects every problem instead of stopping
 * at the first, so a user fixes a bad `.env` in one pass.
 */

export type Env = Readonly<Record<string, string | undefined>>;

export class SettingsError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid settings:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'SettingsError';
    this.problems = problems;
  }
}

interface NumberRule {
  min?: number;
  max?: number;
}

const TRUE_WORDS = new Set(['1', 'true', 'yes', 'on']);
const FALSE_WORDS = new Set(['0', 'false', 'no', 'off']);

export class EnvReader {
  readonly problems: string[] = [];
  /** Every name asked for: the settings that exist, so an unknown key can be reported. */
  readonly read = new Set<string>();
  private readonly env: Env;
  constructor(env: Env) {
    this.env = env;
  }

  /** The raw value, or undefined when unset or blank. */
  raw(name: string): string | undefined {
    this.read.add(name);
    const value = this.env[name];
    if (value === undefined) return undefined;
    const trimmed = value.trim();
    return trimmed === '' ? undefined : trimmed;
  }

  problem(name: string, message: string): void {
    this.problems.push(`${name}: ${message}`);
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  requiredString(name: string, hint = ''): string {
    const value = this.raw(name);
    if (value === undefined) {
      this.problem(name, `is required${hint ? ` (${hint})` : ''}`);
      return '';
    }
    return value;
  }

  private number(name: string, fallback: number, integer: boolean, rule: NumberRule): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    const kind = integer ? 'an integer' : 'a number';
    if (!Number.isFinite(parsed) || (integer && !Number.isInteger(parsed))) {
      this.problem(name, `must be ${kind}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    if (rule.min !== undefined && parsed < rule.min) {
      this.problem(name, `must be ${kind} >= ${rule.min}, got ${value}`);
      return fallback;
    }
    if (rule.max !== undefined && parsed > rule.max) {
      this.problem(name, `must be ${kind} <= ${rule.max}, got ${value}`);
      return fallback;
    }
    return parsed;
  }

  int(name: string, fallback: number, rule: NumberRule = {}): number {
    return this.number(name, fallback, true, rule);
  }

  float(name: string, fallback: number, rule: NumberRule = {}): number {
    return this.number(name, fallback, false, rule);
  }

  optionalInt(name: string, rule: NumberRule = {}): number | undefined {
    if (this.raw(name) === undefined) return undefined;
    return this.int(name, 0, rule);
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase();
    if (TRUE_WORDS.has(lower)) return true;
    if (FALSE_WORDS.has(lower)) return false;
    this.problem(name, `must be true or false, got ${JSON.stringify(value)}`);
    return fallback;
  }

  choice<const T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase();
    const match = choices.find((choice) => choice === lower);
    if (match === undefined) {
      this.problem(name, `must be one of ${choices.join(', ')}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return match;
  }

  /**
   * A command as an argument list, never run through a shell: either a JSON array of strings or
   * words separated by spaces, with single or double quotes grouping words.
   */
  argv(name: string): readonly string[] | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    try {
      const words = parseArgv(value);
      if (words.length === 0) throw new Error('is empty');
      return Object.freeze(words);
    } catch (error) {
      this.problem(name, `${(error as Error).message} (write a JSON array of strings or words separated by spaces)`);
      return undefined;
    }
  }

  /** Comma-separated list; empty entries dropped. */
  list(name: string, fallback: readonly string[]): readonly string[] {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    return Object.freeze(value.split(',').map((item) => item.trim()).filter((item) => item !== ''));
  }
}

export function parseArgv(value: string): string[] {
  const trimmed = value.trim();
  if (trimmed.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new Error('is not valid JSON');
    }
    if (!Array.isArray(parsed) || !parsed.every((item) => typeof item === 'string')) {
      throw new Error('must be a JSON array of strings');
    }
    return parsed as string[];
  }
  const words: string[] = [];
  let current = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (const char of trimmed) {
    if (quote) {
      if (char === quote) quote = null;
      else current += char;
    } else if (char === '"' || char === "'") {
      quote = char;
      inWord = true;
    } else if (/\s/.test(char)) {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else {
      current += char;
      inWord = true;
    }
  }
  if (quote) throw new Error('has an unclosed quote');
  if (inWord) words.push(current);
  return words;
}

/** `10m`, `512k`, `1g` or a plain byte count, as LOG_ROTATE_SIZE is written. */
export function parseSize(value: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)\s*([kmg]?)b?$/i.exec(value.trim());
  if (!match) return undefined;
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[match[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Math.round(Number(match[1]) * unit);
}
