import type { EnvReader } from './reader.ts';

/** MAPELITES_* settings; the scheduler owns their meaning. */
export interface ArchiveSettings {
  readonly rootCommit: string | undefined;
  readonly seedPopulationSize: number;
}

export function readArchiveSettings(reader: EnvReader): ArchiveSettings {
  return {
    rootCommit: reader.optionalString('MAPELITES_EXPERIMENT_ROOT_COMMIT'),
    seedPopulationSize: reader.int('MAPELITES_SEED_POPULATION_SIZE', 4, { min: 0 }),
  };
}
