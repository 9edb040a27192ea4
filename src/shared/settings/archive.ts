import type { EnvReader } from './reader.ts';

/**
 * MAPELITES_* settings; the scheduler owns their meaning.
 *
 * Behaviour descriptors (`MAPELITES_BEHAVIOR_DESCRIPTOR`):
 * - `embedding` (default): each commit's repository state as a vector (mean of per-file vectors),
 *   reduced by a whitened PCA to `MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS` coordinates.
 * - `metrics`: the evaluator metrics named in `MAPELITES_FEATURE_DIMENSIONS`
 *   (`name:min:max,...`), each mapped linearly from its range to [0, 1].
 */

export const BEHAVIOR_DESCRIPTORS = ['embedding', 'metrics'] as const;
/** `grid`: cells per dimension, as the original; `cvt`: a fixed number of Voronoi cells (CVT-MAP-Elites). */
export const ARCHIVE_TYPES = ['grid', 'cvt'] as const;
export type ArchiveType = (typeof ARCHIVE_TYPES)[number];
export type BehaviorDescriptorKind = (typeof BEHAVIOR_DESCRIPTORS)[number];

export interface FeatureDimension {
  readonly metric: string;
  readonly min: number;
  readonly max: number;
}

export interface EmbeddingSettings {
  /** Only files with these extensions (lower case, with the dot) count; `*` allows all text files. */
  readonly extensions: readonly string[];
  readonly maxFileBytes: number;
  /** Width of the offline hashed n-gram file vectors. */
  readonly dimensions: number;
}

export interface ArchiveSettings {
  readonly seedPopulationSize: number;
  readonly archiveType: ArchiveType;
  /** For `grid`. */
  readonly cellsPerDim: number;
  /** For `cvt`: cells per island. */
  readonly cells: number;
  readonly behaviorDescriptor: BehaviorDescriptorKind;
  /** Set for the `metrics` descriptor; empty otherwise. */
  readonly featureDimensions: readonly FeatureDimension[];
  /** Grid dimensions: the PCA target for `embedding`, the feature count for `metrics`. */
  readonly dimensions: number;
  readonly minFitSamples: number;
  readonly refitInterval: number;
  /** Whitened coordinates are clipped to ±clip standard deviations before mapping to [0, 1]. */
  readonly clip: number;
  readonly embedding: EmbeddingSettings;
  readonly fitnessMetric: string;
  readonly fitnessHigherIsBetter: boolean;
  /** The fitness of a candidate whose evaluator did not report the fitness metric. */
  readonly fitnessFloor: number;
  readonly inspirationCount: number;
  readonly neighborMaxRadius: number;
  /** Unset: derived from the experiment UUID, so a rerun of one experiment samples the same way. */
  readonly samplerSeed: number | undefined;
  readonly islands: number;
  readonly migrationInterval: number;
  /** Best elites each island sends to the next one at each migration. */
  readonly migrationSize: number;
}

/** Cells of one island's archive: `MAPELITES_CELLS` for a CVT, cells per dimension to the dimensions for a grid. */
export function cellsPerIsland(archive: Pick<ArchiveSettings, 'archiveType' | 'cells' | 'cellsPerDim' | 'dimensions'>): number {
  return archive.archiveType === 'cvt' ? archive.cells : archive.cellsPerDim ** archive.dimensions;
}

export const DEFAULT_EMBEDDING_EXTENSIONS: readonly string[] = Object.freeze([
  '.py', '.js', '.mjs', '.cjs', '.ts', '.mts', '.cts', '.tsx', '.jsx', '.go', '.rs', '.java', '.kt', '.scala',
  '.c', '.h', '.cc', '.cpp', '.cxx', '.hpp', '.cs', '.rb', '.php', '.swift', '.m', '.jl', '.r', '.lua',
  '.hs', '.ml', '.ex', '.exs', '.clj', '.dart', '.sh', '.sql', '.json', '.toml', '.yaml', '.yml',
]);

function featureDimensions(reader: EnvReader): FeatureDimension[] {
  const name = 'MAPELITES_FEATURE_DIMENSIONS';
  const dims: FeatureDimension[] = [];
  for (const entry of reader.list(name, [])) {
    const parts = entry.split(':').map((part) => part.trim());
    const min = Number(parts[1]);
    const max = Number(parts[2]);
    if (parts.length !== 3 || parts[0] === '' || parts[1] === '' || parts[2] === '' || !Number.isFinite(min) || !Number.isFinite(max)) {
      reader.problem(name, `entry ${JSON.stringify(entry)} must be metric:min:max, e.g. sum_radii:0:2.7`);
      continue;
    }
    if (!(min < max)) {
      reader.problem(name, `entry ${JSON.stringify(entry)} needs min < max`);
      continue;
    }
    if (dims.some((dim) => dim.metric === parts[0])) {
      reader.problem(name, `metric ${parts[0]} is listed twice`);
      continue;
    }
    dims.push({ metric: parts[0], min, max });
  }
  return dims;
}

function extensions(reader: EnvReader): readonly string[] {
  const raw = reader.list('MAPELITES_EMBEDDING_EXTENSIONS', DEFAULT_EMBEDDING_EXTENSIONS);
  return Object.freeze(raw.map((ext) => (ext === '*' || ext.startsWith('.') ? ext : `.${ext}`).toLowerCase()));
}

export function readArchiveSettings(reader: EnvReader): ArchiveSettings {
  const behaviorDescriptor = reader.choice('MAPELITES_BEHAVIOR_DESCRIPTOR', BEHAVIOR_DESCRIPTORS, 'embedding');
  const features = featureDimensions(reader);
  if (behaviorDescriptor === 'metrics' && features.length === 0 && reader.raw('MAPELITES_FEATURE_DIMENSIONS') === undefined) {
    reader.problem('MAPELITES_FEATURE_DIMENSIONS', 'is required when MAPELITES_BEHAVIOR_DESCRIPTOR=metrics (e.g. sum_radii:0:2.7,validity:0:1)');
  }
  const targetDims = reader.int('MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS', 4, { min: 1, max: 16 });
  const minFitSamples = reader.int('MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES', 16, { min: 2 });
  if (behaviorDescriptor === 'embedding' && minFitSamples <= targetDims) {
    reader.problem('MAPELITES_DIMENSION_REDUCTION_MIN_FIT_SAMPLES', `must be greater than MAPELITES_DIMENSION_REDUCTION_TARGET_DIMS (${targetDims}): PCA needs more samples than components`);
  }
  const dimensions = behaviorDescriptor === 'metrics' ? Math.max(features.length, 1) : targetDims;
  const cellsPerDim = reader.int('MAPELITES_ARCHIVE_CELLS_PER_DIM', 32, { min: 1, max: 1024 });
  const higherIsBetter = reader.bool('MAPELITES_FITNESS_HIGHER_IS_BETTER', true);
  const islands = reader.int('MAPELITES_ISLANDS', 1, { min: 1, max: 64 });
  return {
    seedPopulationSize: reader.int('MAPELITES_SEED_POPULATION_SIZE', 4, { min: 0 }),
    archiveType: reader.choice('MAPELITES_ARCHIVE_TYPE', ARCHIVE_TYPES, 'cvt'),
    cellsPerDim,
    cells: reader.int('MAPELITES_CELLS', 128, { min: 2, max: 100_000 }),
    behaviorDescriptor,
    featureDimensions: features,
    dimensions,
    minFitSamples,
    refitInterval: reader.int('MAPELITES_DIMENSION_REDUCTION_REFIT_INTERVAL', 50, { min: 1 }),
    clip: reader.float('MAPELITES_DIMENSION_REDUCTION_CLIP', 3, { min: 0.1 }),
    embedding: {
      extensions: extensions(reader),
      maxFileBytes: reader.int('MAPELITES_EMBEDDING_MAX_FILE_BYTES', 512 * 1024, { min: 1 }),
      dimensions: reader.int('MAPELITES_EMBEDDING_DIMENSIONS', 256, { min: 8, max: 8192 }),
    },
    fitnessMetric: reader.string('MAPELITES_FITNESS_METRIC', 'combined_score'),
    fitnessHigherIsBetter: higherIsBetter,
    fitnessFloor: reader.float('MAPELITES_FITNESS_FLOOR', higherIsBetter ? -1e9 : 1e9),
    inspirationCount: reader.int('MAPELITES_SAMPLER_INSPIRATION_COUNT', 3, { min: 0, max: 64 }),
    neighborMaxRadius: reader.int('MAPELITES_SAMPLER_NEIGHBOR_MAX_RADIUS', 3, { min: 1 }),
    samplerSeed: reader.optionalInt('MAPELITES_SAMPLER_SEED', { min: 0, max: 2 ** 32 - 1 }),
    islands,
    migrationInterval: reader.int('MAPELITES_MIGRATION_INTERVAL', 20, { min: 1 }),
    migrationSize: reader.int('MAPELITES_MIGRATION_SIZE', 1, { min: 1 }),
  };
}
