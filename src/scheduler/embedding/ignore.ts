/**
 * A gitignore subset for deciding which committed files count towards a commit's embedding: the
 * root `.gitignore` and `.loreleyignore` of the commit (nested ignore files are not read).
 * Supported: comments, `!` negation, a trailing `/` for directories, a leading or inner `/`
 * anchoring to the root, `*`, `?`, `[...]` and `**`. The last matching pattern wins, as in git.
 */

interface Rule {
  readonly negate: boolean;
  readonly regex: RegExp;
}

export const IGNORE_FILES = ['.gitignore', '.loreleyignore'] as const;

function globToRegex(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const char = glob[i];
    if (char === '*') {
      if (glob[i + 1] === '*') {
        const atSegmentStart = i === 0 || glob[i - 1] === '/';
        const atSegmentEnd = i + 2 === glob.length || glob[i + 2] === '/';
        if (atSegmentStart && atSegmentEnd) {
          if (i + 2 === glob.length) out += '.*';
          else {
            out += '(?:.*/)?';
            i += 1;
          }
          i += 1;
          continue;
        }
      }
      out += '[^/]*';
    } else if (char === '?') {
      out += '[^/]';
    } else if (char === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) out += '\\[';
      else {
        out += `[${glob.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else if (char === '\\' && i + 1 < glob.length) {
      out += glob[i + 1].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      i += 1;
    } else {
      out += char.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
  }
  return out;
}

function parseRule(line: string): Rule | undefined {
  let pattern = line.replace(/(?<!\\)\s+$/, '');
  if (pattern === '' || pattern.startsWith('#')) return undefined;
  let negate = false;
  if (pattern.startsWith('!')) {
    negate = true;
    pattern = pattern.slice(1);
  }
  const directoryOnly = pattern.endsWith('/');
  if (directoryOnly) pattern = pattern.slice(0, -1);
  const anchored = pattern.includes('/');
  if (pattern.startsWith('/')) pattern = pattern.slice(1);
  if (pattern === '') return undefined;
  const body = globToRegex(pattern);
  const prefix = anchored ? '^' : '^(?:.*/)?';
  // A pattern matching a directory ignores everything below it; a file pattern may also match a directory.
  const suffix = directoryOnly ? '/.*$' : '(?:/.*)?$';
  return { negate, regex: new RegExp(prefix + body + suffix) };
}

export class IgnoreRules {
  private readonly rules: Rule[];

  constructor(sources: readonly string[]) {
    this.rules = sources.flatMap((source) => source.split(/\r?\n/)).map(parseRule).filter((rule): rule is Rule => rule !== undefined);
  }

  ignores(filePath: string): boolean {
    let ignored = false;
    for (const rule of this.rules) {
      if (rule.regex.test(filePath)) ignored = !rule.negate;
    }
    return ignored;
  }
}
