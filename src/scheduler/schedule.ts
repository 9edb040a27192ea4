import { lockArchiveState, readArchiveVersion, saveSamplerState } from '../shared/db/archive.ts';
import { countEvolutionJobs, countUnfinished, countUnfinishedSeeds, insertJob, type EvolutionJob } from '../shared/db/jobs.ts';
import { withTransaction } from '../shared/db/pool.ts';
import { costBudgetExhausted } from './budget.ts';
import type { SchedulerContext } from './context.ts';
import { SeededRandom } from './random.ts';
import { sample } from './sampler.ts';

/**
 * Stage 4, schedule: new jobs within the unfinished cap, the batch size and the budget. While the
 * archive holds no more than the root's baseline they are seeds from the root (at most MAPELITES_SEED_POPULATION_SIZE unfinished
 * at once); after that each is sampled from its island, islands taken round-robin. The sampler's
 * random state and island cursor are saved with the jobs, so a restart continues the sequence.
 */
export async function scheduleStage(context: SchedulerContext, root: string): Promise<number> {
  const { settings, pool, logger, experimentId } = context;
  const { scheduler, archive } = settings;
  const [unfinished, total] = await Promise.all([countUnfinished(pool, experimentId), countEvolutionJobs(pool, experimentId)]);
  let capacity = Math.min(scheduler.maxUnfinishedJobs - unfinished, scheduler.scheduleBatchSize);
  if (scheduler.maxTotalJobs !== undefined) capacity = Math.min(capacity, scheduler.maxTotalJobs - total);
  if (capacity <= 0) return 0;
  if (await costBudgetExhausted(context)) return 0;
  const goal = scheduler.goal ?? null;

  const created = await withTransaction(pool, async (client) => {
    const state = await lockArchiveState(client, experimentId, context.seed);
    const random = new SeededRandom(state.rngState);
    let cursor = state.nextIsland;
    // The elites held in memory, read again only if the version under the lock says someone
    // else wrote them (elites.ts): reading 10,000 back every tick was 30 ms of a 75 ms tick.
    // The version is read, not locked: a refit being written off the tick holds its row, and the
    // elites as they were until it commits are as good to sample from.
    const byIsland = await context.archive.elites.byIsland(client, await readArchiveVersion(client, experimentId));
    const jobs: EvolutionJob[] = [];
    const nextIsland = () => {
      const island = cursor % archive.islands;
      cursor = (cursor + 1) % archive.islands;
      return island;
    };
    // Seeds while the archive holds nothing but the root's baseline (the baseline gate means the
    // baseline is usually in by the time anything is scheduled).
    if ([...byIsland.values()].every((elites) => elites.every((elite) => elite.source === 'baseline'))) {
      const seeds = Math.min(capacity, archive.seedPopulationSize - (await countUnfinishedSeeds(client, experimentId)));
      for (let i = 0; i < seeds; i++) {
        const island = nextIsland();
        jobs.push(await insertJob(client, { experimentId, baseCommit: root, goal, island, payload: { seed: true, sampler: { island } } }));
      }
    } else {
      for (let i = 0; i < capacity; i++) {
        const island = nextIsland();
        const picked = sample(byIsland.get(island) ?? [], archive.inspirationCount, archive.neighborMaxRadius, random, (a, b) => context.archive.tessellation.ringDistance(a, b));
        if (!picked) {
          jobs.push(await insertJob(client, { experimentId, baseCommit: root, goal, island, payload: { sampler: { island, fromRoot: true } } }));
          continue;
        }
        jobs.push(await insertJob(client, {
          experimentId,
          baseCommit: picked.base.commitHash,
          inspirations: picked.inspirations.map((elite) => elite.commitHash),
          goal,
          island,
          payload: {
            sampler: {
              island,
              baseCell: picked.base.cell,
              baseFitness: picked.base.fitness,
              radius: picked.radius,
              inspirationCells: picked.inspirations.map((elite) => elite.cell),
            },
          },
        }));
      }
    }
    await saveSamplerState(client, experimentId, random.state, cursor);
    return jobs;
  });
  if (created.length > 0) logger.info({ jobs: created.map((job) => ({ id: job.id, base: job.baseCommit.slice(0, 12), island: job.island })) }, 'jobs scheduled');
  return created.length;
}
