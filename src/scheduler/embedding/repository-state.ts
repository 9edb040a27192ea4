import path from 'node:path';
import { getCommitEmbeddings, putCommitEmbedding, type CommitEmbedding } from '../../shared/db/archive.ts';
import { getFileEmbeddings, putFileEmbeddings } from '../../shared/db/embeddings.ts';
import type { Queryable } from '../../shared/db/pool.ts';
import type { EmbeddingSettings } from '../../shared/settings/archive.ts';
import { l2Normalize, type FileEmbedder } from './embedder.ts';
import { GitObjects, NULL_OID, regular } from './git-objects.ts';
import { IGNORE_FILES, IgnoreRules } from './ignore.ts';

/**
 * A commit's repository-state vector: the mean of the vectors of its eligible files. A file is
 * eligible when its extension is allowed, the commit's root `.gitignore`/`.loreleyignore` do not
 * ignore it, it is at most `maxFileBytes` and it is text (no NUL byte in its first 8 KiB).
 *
 * File vectors are cached by blob hash (binary blobs as an empty vector, meaning "not counted"),
 * and each commit's sum of vectors is stored, so a child commit is its parent's sum minus the
 * files the diff removed or changed plus the new versions: only changed files are embedded.
 * A diff that touches an ignore file changes eligibility everywhere, so that commit is recomputed
 * from its whole tree.
 *
 * File vectors are kept on a grid of 2^-24 (see `onGrid`), so sums are exact: a commit's sum is
 * the same bits whether computed from its tree or from its parent's by the diff, in any order and
 * whatever was cached, and a rebuild's replay describes every commit exactly as the run did.
 */
export class RepositoryStateEmbedding {
  private readonly db: Queryable;
  private readonly experimentId: string;
  private readonly repository: string;
  private readonly embedder: FileEmbedder;
  private readonly settings: EmbeddingSettings;
  private readonly objects: GitObjects;

  constructor(options: { db: Queryable; experimentId: string; repository: string; embedder: FileEmbedder; settings: EmbeddingSettings }) {
    this.db = options.db;
    this.experimentId = options.experimentId;
    this.repository = options.repository;
    this.embedder = options.embedder;
    this.settings = options.settings;
    this.objects = new GitObjects(options.repository);
  }

  get embedderId(): string {
    return this.embedder.id;
  }

  /** The commit's L2-normalised mean file vector, computed from `parent`'s when one is given. */
  async vector(commit: string, parent?: string | null): Promise<number[]> {
    return meanVector(await this.embedding(commit, parent), this.embedder.dimensions);
  }

  async embedding(commit: string, parent?: string | null): Promise<CommitEmbedding> {
    const withParent = parent && parent !== commit ? parent : undefined;
    // The commit's and its parent's sums in one query: the usual case is a new child of a known parent.
    const cached = await getCommitEmbeddings(this.db, this.experimentId, this.embedder.id, withParent ? [commit, withParent] : [commit]);
    const own = cached.get(commit);
    if (own) return own;
    let computed: CommitEmbedding | undefined;
    if (withParent) {
      const parentEmbedding = cached.get(withParent) ?? (await this.embedding(withParent, null));
      computed = await this.incremental(parentEmbedding, withParent, commit);
    }
    computed ??= await this.full(commit);
    await putCommitEmbedding(this.db, this.experimentId, this.embedder.id, computed);
    return computed;
  }

  private async rules(commit: string): Promise<IgnoreRules> {
    const sources = await Promise.all(IGNORE_FILES.map((file) => this.objects.fileAt(commit, file)));
    return new IgnoreRules(sources.filter((source): source is string => source !== undefined));
  }

  /** Allowed by extension and not ignored; the size cap is checked apart (it needs the blob's size). */
  private pathEligible(rules: IgnoreRules, file: string): boolean {
    const extensions = this.settings.extensions;
    if (!extensions.includes('*') && !extensions.includes(path.extname(file).toLowerCase())) return false;
    return !rules.ignores(file);
  }

  private async full(commit: string): Promise<CommitEmbedding> {
    const [rules, tree] = await Promise.all([this.rules(commit), this.objects.listFiles(commit)]);
    const candidates = tree.filter((entry) => this.pathEligible(rules, entry.path));
    const sizes = await this.objects.sizes(candidates.map((entry) => entry.oid));
    const files = candidates.filter((entry) => (sizes.get(entry.oid) ?? Infinity) <= this.settings.maxFileBytes);
    const vectors = await this.fileVectors(files.map((entry) => entry.oid));
    const sum = new Array<number>(this.embedder.dimensions).fill(0);
    let count = 0;
    for (const entry of files) {
      const vector = vectors.get(entry.oid);
      if (!vector || vector.length === 0) continue;
      addInto(sum, vector, 1);
      count += 1;
    }
    return { commitHash: commit, fileCount: count, vectorSum: sum };
  }

  private async incremental(parentEmbedding: CommitEmbedding, parent: string, commit: string): Promise<CommitEmbedding | undefined> {
    // Both go down the same cat-file process at once: one wait instead of two.
    const [changes, rules] = await Promise.all([this.objects.diff(parent, commit), this.rules(commit)]);
    if (changes.some((change) => (IGNORE_FILES as readonly string[]).includes(change.path))) return undefined;
    const removed: string[] = [];
    const added: string[] = [];
    const sizes = await this.objects.sizes(changes.flatMap((change) => [change.oldBlob, change.newBlob]));
    const eligible = (blob: string, mode: string, file: string) =>
      blob !== NULL_OID && regular(mode) && (sizes.get(blob) ?? Infinity) <= this.settings.maxFileBytes && this.pathEligible(rules, file);
    for (const change of changes) {
      if (eligible(change.oldBlob, change.oldMode, change.path)) removed.push(change.oldBlob);
      if (eligible(change.newBlob, change.newMode, change.path)) added.push(change.newBlob);
    }
    const vectors = await this.fileVectors([...removed, ...added]);
    const sum = [...parentEmbedding.vectorSum];
    let count = parentEmbedding.fileCount;
    for (const blob of removed) {
      const vector = vectors.get(blob);
      if (!vector || vector.length === 0) continue;
      addInto(sum, vector, -1);
      count -= 1;
    }
    for (const blob of added) {
      const vector = vectors.get(blob);
      if (!vector || vector.length === 0) continue;
      addInto(sum, vector, 1);
      count += 1;
    }
    return { commitHash: commit, fileCount: Math.max(count, 0), vectorSum: count <= 0 ? sum.map(() => 0) : sum };
  }

  /** Cached vectors by blob hash; the missing ones are read, embedded and cached. */
  private async fileVectors(blobs: readonly string[]): Promise<Map<string, number[]>> {
    const unique = [...new Set(blobs)];
    const known = await getFileEmbeddings(this.db, this.embedder.id, unique);
    const missing = unique.filter((blob) => !known.has(blob));
    if (missing.length === 0) return known;
    const contents = await this.objects.read(missing);
    const texts: string[] = [];
    const textBlobs: string[] = [];
    const fresh = new Map<string, number[]>();
    for (const blob of missing) {
      const content = contents.get(blob);
      if (!content) throw new Error(`blob ${blob} is missing from the scheduler's clone ${this.repository}`);
      if (content.subarray(0, 8192).includes(0)) fresh.set(blob, []);
      else {
        texts.push(content.toString('utf8'));
        textBlobs.push(blob);
      }
    }
    const embedded = texts.length > 0 ? await this.embedder.embed(texts) : [];
    textBlobs.forEach((blob, index) => fresh.set(blob, embedded[index].map(onGrid)));
    await putFileEmbeddings(this.db, this.embedder.id, fresh);
    for (const [blob, vector] of fresh) known.set(blob, vector);
    return known;
  }
}

/**
 * A component as it is cached: a multiple of 2^-24 that a float32 holds exactly. Any sum of a few
 * million of them is exact in a double, so addition order never changes a commit's sum.
 */
function onGrid(value: number): number {
  return Math.fround(Math.round(value * 2 ** 24) / 2 ** 24);
}

function addInto(target: number[], vector: readonly number[], sign: number): void {
  for (let i = 0; i < target.length; i++) target[i] += sign * (vector[i] ?? 0);
}

export function meanVector(embedding: CommitEmbedding, dimensions: number): number[] {
  if (embedding.fileCount <= 0) return new Array<number>(dimensions).fill(0);
  return l2Normalize(embedding.vectorSum.map((value) => value / embedding.fileCount));
}
