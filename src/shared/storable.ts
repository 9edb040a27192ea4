/**
 * Text on its way into PostgreSQL or git: what a command printed, a metric name, a commit message,
 * an error. Every row writer passes free text through `storableText`, the one place that knows
 * what cannot be stored and what must not be.
 *
 * - PostgreSQL's `text` cannot hold NUL ("invalid byte sequence for encoding UTF8: 0x00") and
 *   `jsonb` rejects `\u0000` and lone surrogates ("unsupported Unicode escape sequence"): NUL
 *   becomes U+2400 (␀, visible and searchable), a lone surrogate U+FFFD. Both come from code a
 *   model wrote, so they must never make the write (or the write of the failure) fail.
 * - Secrets (the database password, API keys) registered at start-up are replaced by
 *   `[redacted]`, so an evaluator that prints its environment cannot put them in a stored row.
 *   The logger scrubs its lines with the same function.
 */

export const REDACTED = '[redacted]';
const NUL_SYMBOL = '\u2400';
// Code units, not code points (no `u` flag): a high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE_SOURCE = '[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]';
const LONE_SURROGATE = new RegExp(LONE_SURROGATE_SOURCE);
const LONE_SURROGATE_ALL = new RegExp(LONE_SURROGATE_SOURCE, 'g');

/** The needles to scrub: each secret as written and JSON-escaped (a JSON line may escape it). */
function needlesOf(secrets: readonly string[]): string[] {
  return [...new Set(secrets.filter((s) => s.length >= 4).flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))]
    // The longest first, so a secret containing another is scrubbed whole.
    .sort((a, b) => b.length - a.length);
}

/** A function that replaces every given secret in a text; the identity when there is none. */
export function scrubber(secrets: readonly string[]): (text: string) => string {
  const needles = needlesOf(secrets);
  if (needles.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const needle of needles) if (out.includes(needle)) out = out.split(needle).join(REDACTED);
    return out;
  };
}

let processSecrets: readonly string[] = [];
let scrubProcessSecrets: (text: string) => string = (text) => text;

/** Called once at start-up with what the logger redacts; later calls add to the list. */
export function registerSecrets(secrets: readonly string[]): void {
  processSecrets = [...new Set([...processSecrets, ...secrets])];
  scrubProcessSecrets = scrubber(processSecrets);
}

/**
 * `text` as it may be stored: NUL and lone surrogates replaced, registered secrets redacted, and
 * at most `maxChars` characters (cut on a character boundary, never inside a surrogate pair).
 */
export function storableText(text: string, maxChars = Number.POSITIVE_INFINITY): string {
  let out = text.includes('\0') ? text.replaceAll('\0', NUL_SYMBOL) : text;
  out = scrubProcessSecrets(out);
  if (out.length > maxChars) out = out.slice(0, maxChars);
  return LONE_SURROGATE.test(out) ? out.replace(LONE_SURROGATE_ALL, '\uFFFD') : out;
}

/** `storableText`, keeping null and undefined as they are. */
export function storableOrNull(text: string | null | undefined, maxChars?: number): string | null {
  return text === null || text === undefined ? null : storableText(text, maxChars);
}
