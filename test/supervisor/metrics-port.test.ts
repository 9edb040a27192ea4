import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture } from '../helpers/experiment.ts';
import { killAllSpawned, spawnSupervisor } from '../helpers/processes.ts';

/** `--metrics-port` on a port that is taken: one line, exit 1, nothing left running. */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

test('a metrics port already in use: exit 1 with a one-line error naming it, before any child starts', async () => {
  const fixture = await createFixture({ experimentId: 'metrics-port' });
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const run = spawnSupervisor(['--workers', '1', '--metrics-port', String(port)], { env: { ...fixture.env, LOG_CONSOLE: 'false' }, cwd: fixture.root });
    const exit = await run.waitExit(60_000);
    assert.equal(exit.code, 1);
    assert.equal(run.stdout(), '');
    assert.equal(run.stderr(), `loreley-supervisor: the metrics endpoint cannot listen on 127.0.0.1:${port}: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`);
  } finally {
    blocker.close();
  }
  for (const bad of ['-1', '70000', 'abc']) {
    const run = spawnSupervisor(['--metrics-port', bad], { env: fixture.env, cwd: fixture.root });
    assert.equal((await run.waitExit(30_000)).code, 1);
    assert.match(run.stderr(), /^loreley-supervisor: .*(--metrics-port must be a port number|Invalid values|NaN|metrics-port)/);
  }
});
