import type { ArchiveSettings } from '../../shared/settings/archive.ts';
import type { RepositoryStateEmbedding } from '../embedding/repository-state.ts';
import { normalizeRange } from './grid.ts';
import { fallbackProject, projectPca, toUnitInterval, type WhitenedPca } from './projection.ts';

/** Where a candidate sits in behaviour space: coordinates in [0, 1], one per grid dimension. */
export interface Description {
  readonly descriptor: number[];
  /** Notes for the ingestion reason (a missing feature metric, the projection used). */
  readonly notes: string[];
}

export interface DescribeInput {
  readonly commit: string;
  /** The commit the candidate was made from; its state vector is reused when known. */
  readonly parent: string | null;
  readonly metrics: ReadonlyMap<string, number>;
}

export interface BehaviorDescriptor {
  readonly kind: 'embedding' | 'metrics';
  readonly dimensions: number;
  describe(input: DescribeInput): Promise<Description>;
}

/** Evaluator metrics with configured ranges as the grid's axes. A missing metric sits at 0. */
export class MetricsDescriptor implements BehaviorDescriptor {
  readonly kind = 'metrics';
  readonly dimensions: number;
  private readonly settings: ArchiveSettings;

  constructor(settings: ArchiveSettings) {
    this.settings = settings;
    this.dimensions = settings.featureDimensions.length;
  }

  describe(input: DescribeInput): Promise<Description> {
    const notes: string[] = [];
    const descriptor = this.settings.featureDimensions.map((feature) => {
      const value = input.metrics.get(feature.metric);
      if (value === undefined) {
        notes.push(`feature metric ${feature.metric} missing, placed at its minimum`);
        return 0;
      }
      return normalizeRange(value, feature.min, feature.max);
    });
    return Promise.resolve({ descriptor, notes });
  }
}

/** The repository-state embedding through the current projection (PCA once fitted). */
export class EmbeddingDescriptor implements BehaviorDescriptor {
  readonly kind = 'embedding';
  readonly dimensions: number;
  readonly state: RepositoryStateEmbedding;
  private readonly clip: number;
  projection: WhitenedPca | undefined;

  constructor(settings: ArchiveSettings, state: RepositoryStateEmbedding, projection: WhitenedPca | undefined) {
    this.dimensions = settings.dimensions;
    this.clip = settings.clip;
    this.state = state;
    this.projection = projection;
  }

  async describe(input: DescribeInput): Promise<Description> {
    const vector = await this.state.vector(input.commit, input.parent);
    return { descriptor: this.project(vector), notes: [this.projection ? 'pca' : 'fallback projection'] };
  }

  project(vector: readonly number[], projection = this.projection): number[] {
    const coordinates = projection ? projectPca(projection, vector, this.dimensions) : fallbackProject(vector, this.dimensions);
    return toUnitInterval(coordinates, this.clip);
  }
}
