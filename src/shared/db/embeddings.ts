import type { Queryable } from './pool.ts';

/**
 * The file-vector cache (`file_embeddings`): a vector per blob hash and embedder, shared by every
 * experiment of the database. Vectors are float32, little-endian, in a `bytea` (an empty one marks a
 * blob that does not count, e.g. binary): written as one binary parameter for a whole batch and read
 * back as raw bytes. As `double precision[]` in text form, writing 2,000 vectors of 256 and reading
 * them back took ≈ 1 s (`npm run bench -- --only embedding`).
 */

const FLOAT_BYTES = 4;

function encode(vector: readonly number[]): Buffer {
  const buffer = Buffer.allocUnsafe(vector.length * FLOAT_BYTES);
  for (let i = 0; i < vector.length; i++) buffer.writeFloatLE(vector[i], i * FLOAT_BYTES);
  return buffer;
}

function decode(buffer: Buffer): number[] {
  const out = new Array<number>(buffer.length / FLOAT_BYTES);
  for (let i = 0; i < out.length; i++) out[i] = buffer.readFloatLE(i * FLOAT_BYTES);
  return out;
}

export async function getFileEmbeddings(db: Queryable, embedderId: string, blobHashes: readonly string[]): Promise<Map<string, number[]>> {
  if (blobHashes.length === 0) return new Map();
  const { rows } = await db.query<{ blobHash: string; vector: Buffer }>(
    'SELECT blob_hash AS "blobHash", vector FROM file_embeddings WHERE embedder_id = $1 AND blob_hash = ANY($2)',
    [embedderId, blobHashes],
  );
  return new Map(rows.map((row) => [row.blobHash, decode(row.vector)]));
}

/** Stores vectors (each component is stored as a float32) in one statement; known blobs are kept. */
export async function putFileEmbeddings(db: Queryable, embedderId: string, vectors: ReadonlyMap<string, readonly number[]>): Promise<void> {
  if (vectors.size === 0) return;
  const parts: Buffer[] = [];
  const offsets: number[] = [];
  const lengths: number[] = [];
  let offset = 1;
  for (const vector of vectors.values()) {
    const bytes = encode(vector);
    parts.push(bytes);
    offsets.push(offset);
    lengths.push(bytes.length);
    offset += bytes.length;
  }
  // One bytea sent in binary (node-pg sends a Buffer so), cut into rows by the server.
  await db.query(
    `INSERT INTO file_embeddings (embedder_id, blob_hash, vector)
     SELECT $1, e.blob_hash, substring($3::bytea FROM e.start FOR e.length)
       FROM unnest($2::text[], $4::int[], $5::int[]) AS e(blob_hash, start, length)
     ON CONFLICT (embedder_id, blob_hash) DO NOTHING`,
    [embedderId, [...vectors.keys()], Buffer.concat(parts), offsets, lengths],
  );
}
