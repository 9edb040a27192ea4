import path from 'node:path';
import type { AgentSettings } from './agent.ts';
import { readArchiveSettings, type ArchiveSettings } from './archive.ts';
import { readCoreSettings, type CoreSettings } from './core.ts';
import { EnvReader, SettingsError } from './reader.ts';
import type { SchedulerSettings } from './scheduler.ts';
import { deepFreeze, mergedEnv, type LoadSettingsOptions } from './index.ts';

/**
 * What the read-only commands (`loreley status`, `logs`, `report`) need: the experiment's identity,
 * its database, its logs, how fitness is read, and the budgets to show progress against. Not the
 * repository, the agent or the evaluator, which a person inspecting a finished run from another
 * directory may not have in their environment.
 */
export interface ReadOnlySettings extends CoreSettings {
  readonly cwd: string;
  readonly archive: ArchiveSettings;
  readonly scheduler: Pick<SchedulerSettings, 'maxTotalJobs'>;
  readonly agent: Pick<AgentSettings, 'maxCostUsd'>;
}

export function loadReadOnlySettings(options: LoadSettingsOptions = {}): ReadOnlySettings {
  const cwd = path.resolve(options.cwd ?? process.cwd());
  const reader = new EnvReader(mergedEnv({ ...options, cwd }));
  const core = readCoreSettings(reader, cwd);
  const maxCost = reader.raw('LORELEY_MAX_COST_USD');
  const settings: ReadOnlySettings = {
    ...core,
    cwd,
    archive: readArchiveSettings(reader),
    scheduler: { maxTotalJobs: reader.optionalInt('SCHEDULER_MAX_TOTAL_JOBS', { min: 0 }) },
    agent: { maxCostUsd: maxCost === undefined ? undefined : reader.float('LORELEY_MAX_COST_USD', 0, { min: 0 }) },
  };
  if (reader.problems.length > 0) throw new SettingsError(reader.problems);
  return deepFreeze(settings);
}
