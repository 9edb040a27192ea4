import { float8Array, int4Array } from './binary-arrays.ts';
import type { Queryable } from './pool.ts';

/** SQL for the MAP-Elites archive: `archive_elites`, `archive_state` and the embedding caches. */

export interface Elite {
  readonly experimentId: string;
  readonly island: number;
  readonly cellKey: string;
  readonly cell: number[];
  /** Coordinates in [0, 1] per dimension; the cell is derived from them. */
  readonly descriptor: number[];
  readonly commitHash: string;
  readonly jobId: string | null;
  readonly fitness: number;
  /** `ingestion`, `baseline`, `migration` or `refit`. */
  readonly source: string;
}

const ELITE_COLUMNS = `experiment_id AS "experimentId", island, cell_key AS "cellKey", array_send(cell) AS cell,
  array_send(descriptor) AS descriptor, commit_hash AS "commitHash", job_id AS "jobId", fitness, source`;

type EliteRow = Omit<Elite, 'cell' | 'descriptor'> & { readonly cell: Buffer; readonly descriptor: Buffer };

function elite(row: EliteRow): Elite {
  return { ...row, cell: int4Array(row.cell), descriptor: float8Array(row.descriptor) };
}

/** The cell's elite, locked for the rest of the transaction so two placements never race. */
export async function lockElite(db: Queryable, experimentId: string, island: number, cellKey: string): Promise<Elite | undefined> {
  const { rows } = await db.query<EliteRow>(
    `SELECT ${ELITE_COLUMNS} FROM archive_elites WHERE experiment_id = $1 AND island = $2 AND cell_key = $3 FOR UPDATE`,
    [experimentId, island, cellKey],
  );
  return rows[0] && elite(rows[0]);
}

export async function upsertElite(db: Queryable, elite: Elite): Promise<void> {
  await db.query(
    `INSERT INTO archive_elites (experiment_id, island, cell_key, cell, descriptor, commit_hash, job_id, fitness, source)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (experiment_id, island, cell_key) DO UPDATE
       SET cell = EXCLUDED.cell, descriptor = EXCLUDED.descriptor, commit_hash = EXCLUDED.commit_hash,
           job_id = EXCLUDED.job_id, fitness = EXCLUDED.fitness, source = EXCLUDED.source, placed_at = now()`,
    [elite.experimentId, elite.island, elite.cellKey, elite.cell, elite.descriptor, elite.commitHash, elite.jobId, elite.fitness, elite.source],
  );
}

/**
 * Inserts many elites in one statement (a refit writes the whole archive back). Every column goes
 * as one text parameter built with a single join (numbers as one array literal, words one per
 * line), and each row's cell and descriptor are slices of one flat array: node-pg quoting 10,000
 * array literals element by element held the event loop ~120 ms under load (`--cpu-prof` of
 * `npm run bench -- --only archive`). Cells and descriptors are as wide in every elite of an
 * archive; commit hashes, cell keys and sources hold no newline.
 */
export async function insertElites(db: Queryable, experimentId: string, elites: readonly Omit<Elite, 'experimentId'>[]): Promise<void> {
  if (elites.length === 0) return;
  const cellWidth = elites[0].cell.length;
  const descriptorWidth = elites[0].descriptor.length;
  if (elites.some((e) => e.cell.length !== cellWidth || e.descriptor.length !== descriptorWidth)) {
    throw new Error('insertElites: the elites\' cells or descriptors differ in width');
  }
  const numbers = (values: ReadonlyArray<number>) => `{${values.join(',')}}`;
  await db.query(
    `INSERT INTO archive_elites (experiment_id, island, cell_key, cell, descriptor, commit_hash, job_id, fitness, source)
     SELECT $1, e.island, e.cell_key, a.cells[(e.i::int - 1) * $10::int + 1 : e.i::int * $10::int], a.descriptors[(e.i::int - 1) * $11::int + 1 : e.i::int * $11::int],
            e.commit_hash, NULLIF(e.job_id, '')::uuid, e.fitness, e.source
       FROM ROWS FROM (unnest($2::integer[]), unnest(string_to_array($3, E'\n')), unnest(string_to_array($4, E'\n')),
                       unnest(string_to_array($5, E'\n')), unnest($6::double precision[]), unnest(string_to_array($7, E'\n')))
              WITH ORDINALITY AS e(island, cell_key, commit_hash, job_id, fitness, source, i),
            (SELECT $8::integer[] AS cells, $9::double precision[] AS descriptors) AS a`,
    [
      experimentId,
      numbers(elites.map((e) => e.island)),
      elites.map((e) => e.cellKey).join('\n'),
      elites.map((e) => e.commitHash).join('\n'),
      elites.map((e) => e.jobId ?? '').join('\n'),
      numbers(elites.map((e) => e.fitness)),
      elites.map((e) => e.source).join('\n'),
      numbers(elites.flatMap((e) => e.cell)),
      numbers(elites.flatMap((e) => e.descriptor)),
      cellWidth,
      descriptorWidth,
    ],
  );
}

/** Elites in a stable order (island, cell key), so seeded sampling is reproducible. */
export async function listElites(db: Queryable, experimentId: string, island?: number): Promise<Elite[]> {
  const { rows } = island === undefined
    ? await db.query<EliteRow>(`SELECT ${ELITE_COLUMNS} FROM archive_elites WHERE experiment_id = $1 ORDER BY island, cell_key`, [experimentId])
    : await db.query<EliteRow>(`SELECT ${ELITE_COLUMNS} FROM archive_elites WHERE experiment_id = $1 AND island = $2 ORDER BY cell_key`, [experimentId, island]);
  return rows.map(elite);
}

export async function countElitesByIsland(db: Queryable, experimentId: string): Promise<Map<number, number>> {
  const { rows } = await db.query<{ island: number; count: number }>(
    'SELECT island, count(*)::int AS count FROM archive_elites WHERE experiment_id = $1 GROUP BY island',
    [experimentId],
  );
  return new Map(rows.map((row) => [row.island, row.count]));
}

/** The best elite over every island; ties go to the earliest placed. */
export async function bestElite(db: Queryable, experimentId: string, higherIsBetter: boolean): Promise<Elite | undefined> {
  const { rows } = await db.query<EliteRow>(
    `SELECT ${ELITE_COLUMNS} FROM archive_elites WHERE experiment_id = $1
      ORDER BY fitness ${higherIsBetter ? 'DESC' : 'ASC'}, placed_at, island, cell_key LIMIT 1`,
    [experimentId],
  );
  return rows[0] && elite(rows[0]);
}

/** The island's best elites, best first. */
export async function topElites(db: Queryable, experimentId: string, island: number, limit: number, higherIsBetter: boolean): Promise<Elite[]> {
  const { rows } = await db.query<EliteRow>(
    `SELECT ${ELITE_COLUMNS} FROM archive_elites WHERE experiment_id = $1 AND island = $2
      ORDER BY fitness ${higherIsBetter ? 'DESC' : 'ASC'}, placed_at, cell_key LIMIT $3`,
    [experimentId, island, limit],
  );
  return rows.map(elite);
}

export async function deleteElites(db: Queryable, experimentId: string): Promise<void> {
  await db.query('DELETE FROM archive_elites WHERE experiment_id = $1', [experimentId]);
}

export interface ArchiveState {
  readonly experimentId: string;
  readonly ingestions: number;
  readonly rngState: number;
  readonly nextIsland: number;
  /** The fitted projection (see the scheduler's projection module), or null before the first fit. */
  readonly projection: unknown;
  /** The ingestion count at the last fit. */
  readonly projectionFittedAt: number | null;
}

const STATE_COLUMNS = `experiment_id AS "experimentId", ingestions, rng_state AS "rngState", next_island AS "nextIsland",
  projection, projection_fitted_at AS "projectionFittedAt"`;

/** Creates the row on first sight with the sampler's seed; locked for the transaction. */
export async function lockArchiveState(db: Queryable, experimentId: string, seed: number): Promise<ArchiveState> {
  await db.query('INSERT INTO archive_state (experiment_id, rng_state) VALUES ($1, $2) ON CONFLICT (experiment_id) DO NOTHING', [experimentId, seed]);
  const { rows } = await db.query<ArchiveState>(`SELECT ${STATE_COLUMNS} FROM archive_state WHERE experiment_id = $1 FOR UPDATE`, [experimentId]);
  return rows[0];
}

export async function getArchiveState(db: Queryable, experimentId: string): Promise<ArchiveState | undefined> {
  const { rows } = await db.query<ArchiveState>(`SELECT ${STATE_COLUMNS} FROM archive_state WHERE experiment_id = $1`, [experimentId]);
  return rows[0];
}

/**
 * The elites' version: changes with every statement writing them (migration 8's trigger); a
 * bigint as text. Undefined while no elite was ever written.
 */
export async function readArchiveVersion(db: Queryable, experimentId: string): Promise<string | undefined> {
  const { rows } = await db.query<{ version: string }>('SELECT version::text AS version FROM archive_versions WHERE experiment_id = $1', [experimentId]);
  return rows[0]?.version;
}

/**
 * The elites' version, its row locked for the transaction: every writer of the elites takes it
 * first (before the state row), so a writer knows which version it builds on.
 */
export async function lockArchiveVersion(db: Queryable, experimentId: string): Promise<string> {
  await db.query('INSERT INTO archive_versions (experiment_id) VALUES ($1) ON CONFLICT (experiment_id) DO NOTHING', [experimentId]);
  const { rows } = await db.query<{ version: string }>('SELECT version::text AS version FROM archive_versions WHERE experiment_id = $1 FOR UPDATE', [experimentId]);
  return rows[0].version;
}

export async function saveSamplerState(db: Queryable, experimentId: string, rngState: number, nextIsland: number): Promise<void> {
  await db.query(
    'UPDATE archive_state SET rng_state = $2, next_island = $3, updated_at = now() WHERE experiment_id = $1',
    [experimentId, rngState, nextIsland],
  );
}

/** Counts one ingestion; returns the new count. */
export async function countIngestion(db: Queryable, experimentId: string): Promise<number> {
  const { rows } = await db.query<{ ingestions: number }>(
    'UPDATE archive_state SET ingestions = ingestions + 1, updated_at = now() WHERE experiment_id = $1 RETURNING ingestions',
    [experimentId],
  );
  return rows[0].ingestions;
}

/** Stores the fitted projection, fitted at the ingestion count stored now; returns that count. */
export async function saveProjection(db: Queryable, experimentId: string, projection: unknown): Promise<number> {
  const { rows } = await db.query<{ ingestions: number }>(
    'UPDATE archive_state SET projection = $2, projection_fitted_at = ingestions, updated_at = now() WHERE experiment_id = $1 RETURNING ingestions',
    [experimentId, JSON.stringify(projection)],
  );
  return rows[0]?.ingestions ?? 0;
}

export interface CommitEmbedding {
  readonly commitHash: string;
  readonly fileCount: number;
  /** Sum of the eligible files' vectors; the mean is `vectorSum / fileCount`. */
  readonly vectorSum: number[];
}

type CommitEmbeddingRow = Omit<CommitEmbedding, 'vectorSum'> & { readonly vectorSum: Buffer };

function commitEmbedding(row: CommitEmbeddingRow): CommitEmbedding {
  return { ...row, vectorSum: float8Array(row.vectorSum) };
}

export async function getCommitEmbeddings(db: Queryable, experimentId: string, embedderId: string, commitHashes: readonly string[]): Promise<Map<string, CommitEmbedding>> {
  if (commitHashes.length === 0) return new Map();
  const { rows } = await db.query<CommitEmbeddingRow>(
    `SELECT commit_hash AS "commitHash", file_count AS "fileCount", array_send(vector_sum) AS "vectorSum"
       FROM commit_embeddings WHERE experiment_id = $1 AND embedder_id = $2 AND commit_hash = ANY($3)`,
    [experimentId, embedderId, commitHashes],
  );
  return new Map(rows.map((row) => [row.commitHash, commitEmbedding(row)]));
}

export async function putCommitEmbedding(db: Queryable, experimentId: string, embedderId: string, embedding: CommitEmbedding): Promise<void> {
  await db.query(
    `INSERT INTO commit_embeddings (experiment_id, embedder_id, commit_hash, file_count, vector_sum)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (experiment_id, embedder_id, commit_hash) DO UPDATE
       SET file_count = EXCLUDED.file_count, vector_sum = EXCLUDED.vector_sum`,
    [experimentId, embedderId, embedding.commitHash, embedding.fileCount, embedding.vectorSum],
  );
}

/** The most recent commit vectors, the samples a projection is fitted on. */
export async function recentCommitEmbeddings(db: Queryable, experimentId: string, embedderId: string, limit: number): Promise<CommitEmbedding[]> {
  // The newest are picked on their keys alone, then only their vectors are read: sorting whole
  // rows sorted every stored vector (30 MB spilled to disk at 10,000 commits).
  const { rows } = await db.query<CommitEmbeddingRow>(
    `SELECT e.commit_hash AS "commitHash", e.file_count AS "fileCount", array_send(e.vector_sum) AS "vectorSum"
       FROM (SELECT commit_hash, created_at FROM commit_embeddings WHERE experiment_id = $1 AND embedder_id = $2
              ORDER BY created_at DESC, commit_hash LIMIT $3) AS recent
       JOIN commit_embeddings AS e ON e.experiment_id = $1 AND e.embedder_id = $2 AND e.commit_hash = recent.commit_hash
      ORDER BY recent.created_at DESC, recent.commit_hash`,
    [experimentId, embedderId, limit],
  );
  return rows.map(commitEmbedding);
}

export async function countCommitEmbeddings(db: Queryable, experimentId: string, embedderId: string): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    'SELECT count(*)::int AS count FROM commit_embeddings WHERE experiment_id = $1 AND embedder_id = $2',
    [experimentId, embedderId],
  );
  return rows[0].count;
}
