import { fnv1a } from '../random.ts';

/**
 * Turns file contents into vectors. The scheduler caches each file's vector by git blob hash under
 * the embedder's `id`, so an embedder whose output changes (another model, other dimensions) must
 * change its id too.
 *
 * An OpenAI-compatible embeddings client plugs in by implementing this interface; the default is
 * `HashedNgramEmbedder`, which needs no model and no network.
 */
export interface FileEmbedder {
  /** Identifies the vector space; part of the cache key. */
  readonly id: string;
  readonly dimensions: number;
  /** One vector of `dimensions` numbers per text, in order. */
  embed(texts: string[]): Promise<number[][]>;
}

const TOKEN = /[A-Za-z_][A-Za-z0-9_]*|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[^\s\w]/g;


/**
 * The feature-hashing trick over token unigrams and bigrams: each n-gram adds ±1 to one of
 * `dimensions` buckets (the sign from a second hash keeps collisions unbiased), then the file's
 * vector is L2-normalised so a long file does not outweigh a short one. Numbers are tokens too, so
 * a change of a constant moves the vector.
 */
export class HashedNgramEmbedder implements FileEmbedder {
  readonly id: string;
  readonly dimensions: number;

  constructor(dimensions = 256) {
    this.dimensions = dimensions;
    this.id = `hashed-ngram-v1-${dimensions}`;
  }

  embed(texts: string[]): Promise<number[][]> {
    return Promise.resolve(texts.map((text) => this.embedOne(text)));
  }

  private embedOne(text: string): number[] {
    const vector = new Array<number>(this.dimensions).fill(0);
    const tokens = text.match(TOKEN) ?? [];
    const add = (feature: string) => {
      const h = fnv1a(feature);
      const sign = fnv1a(feature, 0x9747b28c) & 1 ? 1 : -1;
      vector[h % this.dimensions] += sign;
    };
    for (let i = 0; i < tokens.length; i++) {
      add(`1:${tokens[i]}`);
      if (i + 1 < tokens.length) add(`2:${tokens[i]} ${tokens[i + 1]}`);
    }
    return l2Normalize(vector);
  }
}

export function l2Normalize(vector: readonly number[]): number[] {
  let norm = 0;
  for (const value of vector) norm += value * value;
  norm = Math.sqrt(norm);
  return norm === 0 ? [...vector] : vector.map((value) => value / norm);
}
