import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { freePort, startEmbeddedDatabase, type EmbeddedDatabase } from '../src/shared/embedded-database.ts';
import { createFixture, fixtureSettings, logDir } from '../test/helpers/experiment.ts';
import { tempDir } from '../test/helpers/git.ts';
import { killAllSpawned, readLog, spawnSupervisor, type Spawned } from '../test/helpers/processes.ts';
import { audit } from '../test/faults/audit.ts';
import { useStallingCommands } from '../test/faults/helpers.ts';
import { urlPasswords } from '../src/shared/logger.ts';

/**
 * `npm run soak -- --minutes 30`: the service under sustained faults. A supervisor with 8 workers
 * and a scheduler runs an experiment on a PostgreSQL of its own; a random child (worker or
 * scheduler) is SIGKILLed every ~10 s and the database is restarted every 5 minutes. At the end the
 * faults stop, the jobs in flight are finished (`--exit-when-done` with the budget set to the jobs
 * that exist), and the fault audit must balance. Progress is printed every 10 s; the exit code is
 * 0 only when the audit found nothing.
 */

function parse(): { minutes: number; workers: number; killEverySeconds: number; restartEveryMinutes: number } {
  const usage = 'usage: node bench/soak.ts [--minutes 30] [--workers 8] [--kill-every 10] [--restart-every 5]';
  try {
    const { values } = parseArgs({
      options: {
        minutes: { type: 'string', default: '30' },
        workers: { type: 'string', default: '8' },
        'kill-every': { type: 'string', default: '10' },
        'restart-every': { type: 'string', default: '5' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    }
    const number = (name: string, value: string, min: number) => {
      const parsed = Number(value);
      if (!Number.isFinite(parsed) || parsed < min) throw new Error(`--${name} must be a number >= ${min} (got ${JSON.stringify(value)})`);
      return parsed;
    };
    return {
      minutes: number('minutes', values.minutes, 0.5),
      workers: Math.round(number('workers', values.workers, 1)),
      killEverySeconds: number('kill-every', values['kill-every'], 1),
      restartEveryMinutes: number('restart-every', values['restart-every'], 0.25),
    };
  } catch (error) {
    process.stderr.write(`soak: ${(error as Error).message}\n${usage}\n`);
    process.exit(2);
  }
}

const log = (message: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

/** The supervisor's children (its workers and scheduler), from /proc. */
function children(pid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push(Number(name));
    } catch {
      // Exited while we looked.
    }
  }
  return found;
}

async function main(): Promise<number> {
  const options = parse();
  const directory = tempDir('loreley-soak-pg-');
  const port = await freePort();
  let server: EmbeddedDatabase = await startEmbeddedDatabase({ directory, port });
  const url = server.url;
  const fixture = await createFixture({
    experimentId: 'soak',
    database: false,
    env: {
      DATABASE_URL: url,
      SCHEDULER_POLL_INTERVAL_SECONDS: '0.5',
      SCHEDULER_LOCK_POLL_SECONDS: '1',
      SCHEDULER_MAX_UNFINISHED_JOBS: String(options.workers * 2),
      TASKS_WORKER_HEARTBEAT_SECONDS: '10',
      SUPERVISOR_HEARTBEAT_INTERVAL_MS: '500',
      SUPERVISOR_RESTART_BACKOFF_INITIAL_MS: '200',
      SUPERVISOR_MIN_UPTIME_SECONDS: '2',
    },
  });
  useStallingCommands(fixture);
  writeFileSync(path.join(fixture.recordsDir, 'evaluator-ms'), '1500');
  const settings = fixtureSettings(fixture);
  log(`experiment ${settings.experiment.namespace} in ${fixture.root}; database on port ${port}; ${options.workers} workers for ${options.minutes} min`);

  const client = async <T>(fn: (db: pg.Client) => Promise<T>): Promise<T | undefined> => {
    const db = new pg.Client({ connectionString: url, options: `-c search_path=${settings.database.schema}`, connectionTimeoutMillis: 2000 });
    db.on('error', () => undefined);
    try {
      await db.connect();
      return await fn(db);
    } catch {
      return undefined;
    } finally {
      await db.end().catch(() => undefined);
    }
  };
  const counts = () =>
    client(async (db) => {
      const { rows } = await db.query<{ status: string; n: number }>('SELECT status, count(*)::int AS n FROM evolution_jobs GROUP BY status');
      return Object.fromEntries(rows.map((row) => [row.status, row.n])) as Record<string, number>;
    });

  let supervisor: Spawned = spawnSupervisor(['--workers', String(options.workers)], { env: fixture.env, cwd: fixture.root });
  const started = Date.now();
  const endAt = started + options.minutes * 60_000;
  let kills = 0;
  let restarts = 0;
  let nextKill = Date.now() + 15_000;
  let nextRestart = started + options.restartEveryMinutes * 60_000;
  let nextReport = Date.now() + 10_000;
  while (Date.now() < endAt) {
    if (supervisor.child.exitCode !== null || supervisor.child.signalCode !== null) {
      log(`the supervisor exited (${supervisor.child.exitCode ?? supervisor.child.signalCode}): ${supervisor.stderr().slice(-1500)}`);
      return 1;
    }
    const now = Date.now();
    if (now >= nextKill) {
      const pids = children(supervisor.pid);
      if (pids.length > 0) {
        const victim = pids[Math.floor(Math.random() * pids.length)];
        try {
          process.kill(victim, 'SIGKILL');
          kills += 1;
        } catch {
          // Gone already.
        }
      }
      nextKill = now + options.killEverySeconds * 1000 * (0.5 + Math.random());
    }
    if (now >= nextRestart) {
      log('restarting the database');
      await server.stop();
      await sleep(3000);
      server = await startEmbeddedDatabase({ directory, port });
      restarts += 1;
      nextRestart = Date.now() + options.restartEveryMinutes * 60_000;
    }
    if (now >= nextReport) {
      const c = await counts();
      log(`${Math.round((now - started) / 1000)} s: ${c ? Object.entries(c).map(([k, v]) => `${k} ${v}`).join(', ') : '(database unavailable)'}; ${kills} kills, ${restarts} database restarts`);
      nextReport = now + 10_000;
    }
    await sleep(200);
  }

  // The faults stop; what exists is finished: the budget becomes the jobs there are.
  log('faults stopped: draining the supervisor, then finishing the jobs in flight');
  process.kill(supervisor.pid, 'SIGTERM');
  await supervisor.waitExit(180_000);
  const total = (await client(async (db) => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM evolution_jobs WHERE kind = 'evolution'")).rows[0].n)) ?? 0;
  supervisor = spawnSupervisor(['--workers', String(options.workers), '--exit-when-done', '--max-jobs', String(total)], { env: fixture.env, cwd: fixture.root });
  const exit = await supervisor.waitExit(600_000);
  if (exit.code !== 0) {
    log(`the final supervisor exited ${exit.code ?? exit.signal}: ${supervisor.stderr().slice(-1500)}`);
    return 1;
  }

  const supervisorLog = readLog(logDir(fixture, settings, 'supervisor', 'supervisor'));
  const errored = supervisorLog.filter((line) => /marked errored/.test(String(line.msg))).length;
  const handedBack = supervisorLog.filter((line) => /handed back to the queue/.test(String(line.msg))).length;
  const spooled = readLog(fixture.logsDir).filter((line) => line.msg === 'result recorded from the spool').length;
  const report = await audit({
    databaseUrl: url,
    schema: settings.database.schema,
    bossSchema: settings.database.bossSchema,
    experimentUuid: settings.experiment.uuid,
    queueName: settings.queue.name,
    root: fixture.root,
    baseClone: fixture.worktree,
    logDirs: [fixture.logsDir],
    secrets: urlPasswords(url),
    expectIngestion: true,
  });
  await server.remove();
  const c = report.counts;
  process.stdout.write(
    [
      `soak: ${options.minutes} min, ${options.workers} workers, ${kills} children SIGKILLed, ${restarts} database restarts`,
      `jobs ${c.jobs}: succeeded ${c.succeeded}, failed ${c.failed}, cancelled ${c.cancelled}; ingested ${c.ingested}; handed back by the supervisor ${handedBack}; recorded from the spool ${spooled}; slots errored ${errored}`,
      report.problems.length === 0 ? 'audit: clean' : `audit: ${report.problems.length} problem(s)\n  ${report.problems.join('\n  ')}`,
      '',
    ].join('\n'),
  );
  return report.problems.length === 0 && errored === 0 ? 0 : 1;
}

let code = 1;
try {
  code = await main();
} catch (error) {
  process.stderr.write(`soak: ${(error as Error).stack ?? String(error)}\n`);
} finally {
  killAllSpawned();
}
process.exit(code);
