import { createHash } from 'node:crypto';

/**
 * Experiment identity: how `EXPERIMENT_ID` (a UUID or a slug) becomes the UUID stored in the
 * database and the namespace used for queue names, branches and directories.
 *
 * Kept byte-compatible with the Python original, so a Node run and a Python run of the same
 * experiment share one identity: a slug maps to
 * `uuid5(uuid5(NAMESPACE_DNS, "ace.loreley.experiment_id"), raw)`.
 */

export const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';
const EXPERIMENT_NAMESPACE_NAME = 'ace.loreley.experiment_id';
const UUID_PATTERN = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

export interface ExperimentIdentity {
  /** What the user wrote, trimmed. */
  readonly raw: string;
  /** Canonical lower-case UUID with dashes. */
  readonly uuid: string;
  /** Filesystem- and queue-safe name, e.g. `circle-packing-a7780c9d`. */
  readonly namespace: string;
}

export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** RFC 4122 name-based UUID (SHA-1), as Python's `uuid.uuid5`. */
export function uuid5(namespace: string, name: string): string {
  const digest = createHash('sha1').update(uuidBytes(namespace)).update(name, 'utf8').digest();
  const bytes = Buffer.from(digest.subarray(0, 16));
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/** Runs of characters outside `[A-Za-z0-9._-]` become `-`; dashes collapse; trimmed; lower case. */
export function slugify(raw: string): string {
  return raw
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '')
    .toLowerCase();
}

export const EXPERIMENT_ID_NAMESPACE = uuid5(NAMESPACE_DNS, EXPERIMENT_NAMESPACE_NAME);

export function resolveExperiment(rawValue: string): ExperimentIdentity {
  const raw = rawValue.trim();
  if (raw === '') throw new Error('EXPERIMENT_ID is empty');
  if (isUuid(raw)) {
    const uuid = formatUuid(uuidBytes(raw.toLowerCase()));
    return Object.freeze({ raw, uuid, namespace: uuid.replace(/-/g, '') });
  }
  const slug = slugify(raw);
  if (slug === '') throw new Error(`EXPERIMENT_ID ${JSON.stringify(raw)} has no usable characters`);
  const uuid = uuid5(EXPERIMENT_ID_NAMESPACE, raw);
  return Object.freeze({ raw, uuid, namespace: `${slug}-${uuid.slice(0, 8)}` });
}

export function defaultQueueName(experiment: ExperimentIdentity): string {
  return `loreley.evolution.${experiment.namespace}`;
}

export function jobBranchName(experiment: ExperimentIdentity, jobId: string): string {
  return `evolution/job/${experiment.namespace}/${jobId}`;
}

export function bestBranchName(experiment: ExperimentIdentity): string {
  return `evolution/best/${experiment.namespace}`;
}
