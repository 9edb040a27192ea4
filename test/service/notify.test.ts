import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { writeServiceFiles } from '../../src/cli/init-example.ts';
import { stopTestServer } from '../helpers/database.ts';
import { createFixture, fixtureSettings, logDir } from '../helpers/experiment.ts';
import { tempDir } from '../helpers/git.ts';
import { killAllSpawned, readLog, ROOT, spawnSupervisor, waitFor } from '../helpers/processes.ts';

/**
 * The supervisor under systemd's Type=notify, without systemd: the test owns the notify socket (a
 * Python AF_UNIX datagram receiver that, like PID 1, closes the barrier fd each message carries),
 * starts the supervisor with NOTIFY_SOCKET and WATCHDOG_USEC, and reads the messages in order.
 */

after(async () => {
  killAllSpawned();
  await stopTestServer();
});

const RECEIVER = `
import json, os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(out, 'a', buffering=1) as f:
    f.write('"listening"\\n')
    while True:
        data, ancdata, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for i in range(0, len(payload) - len(payload) % 4, 4):
                    os.close(int.from_bytes(payload[i:i + 4], sys.byteorder))
        f.write(json.dumps(data.decode()) + '\\n')
`;

function messages(file: string): string[][] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as string)
    .filter((message) => message !== 'listening' && message !== 'BARRIER=1')
    .map((message) => message.split('\n').filter((part) => !part.startsWith('MAINPID=')));
}

const has = (message: string[], assignment: string) => message.some((part) => part === assignment || (assignment.endsWith('=') && part.startsWith(assignment)));

test('READY=1 with a STATUS once every child is up, WATCHDOG=1 while healthy, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM', async (t) => {
  const python = spawnSync('python3', ['--version']);
  if (python.status !== 0) return t.skip('python3 is needed to receive datagrams');
  const directory = tempDir('loreley-notify-');
  const socketPath = path.join(directory, 'notify.sock');
  const received = path.join(directory, 'received.jsonl');
  const script = path.join(directory, 'receiver.py');
  writeFileSync(script, RECEIVER);
  const receiver = spawn('python3', [script, socketPath, received], { stdio: 'ignore' });
  after(() => receiver.kill('SIGKILL'));
  await waitFor('the notify socket', () => existsSync(received), 10_000);

  const fixture = await createFixture({ experimentId: 'notify', env: { SCHEDULER_LOCK_POLL_SECONDS: '0.2' } });
  const env = { ...fixture.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '400000' };
  const supervisor = spawnSupervisor(['--workers', '2'], { env, cwd: fixture.root });
  try {
    await waitFor('READY=1', () => messages(received).some((m) => has(m, 'READY=1')), 60_000, 50, supervisor);
    const log = () => readLog(logDir(fixture, fixtureSettings(fixture), 'supervisor', 'supervisor'));
    // READY=1 came after every child reported ready, never before.
    const lines = log();
    const allReady = lines.findIndex((line) => line.msg === 'all children ready');
    assert.ok(allReady >= 0, 'the supervisor logged that every child is ready');
    assert.equal(lines.filter((line) => line.msg === 'child ready').length, 3, 'two workers and the scheduler were ready first');
    await waitFor('two watchdog pings', () => messages(received).filter((m) => has(m, 'WATCHDOG=1')).length >= 2, 10_000, 50, supervisor);

    process.kill(supervisor.pid, 'SIGHUP');
    await waitFor('READY=1 after the reload', () => {
      const all = messages(received);
      const reloading = all.findIndex((m) => has(m, 'RELOADING=1'));
      return reloading >= 0 && all.slice(reloading + 1).some((m) => has(m, 'READY=1'));
    }, 90_000, 50, supervisor);

    process.kill(supervisor.pid, 'SIGTERM');
    assert.equal((await supervisor.waitExit(60_000)).code, 0, supervisor.stderr().slice(-2000));
  } finally {
    supervisor.killGroup();
  }

  const all = messages(received);
  t.diagnostic(all.map((m) => m.join(' ')).join(' | '));
  const first = all[0];
  assert.ok(has(first, 'READY=1') && has(first, 'STATUS='), `the first message is READY=1 with a STATUS: ${first.join(' ')}`);
  assert.match(first.find((part) => part.startsWith('STATUS='))!, /^STATUS=ready: 2 workers and the scheduler$/);
  const ready = all.findIndex((m) => has(m, 'READY=1'));
  const reloading = all.findIndex((m) => has(m, 'RELOADING=1'));
  const stopping = all.findIndex((m) => has(m, 'STOPPING=1'));
  assert.ok(all.slice(0, ready).every((m) => !has(m, 'WATCHDOG=1')), 'no watchdog ping before READY=1');
  assert.ok(ready < reloading && reloading < stopping, 'READY, RELOADING, STOPPING in that order');
  assert.ok(all.slice(reloading).some((m, i) => has(m, 'READY=1') && reloading + i < stopping), 'READY=1 again after the reload');
  assert.ok(all.slice(reloading).some((m) => has(m, 'STATUS=') && /reloading worker0001/.test(m.join(' '))), 'the reload reports progress in STATUS');
  assert.match(all[stopping].find((part) => part.startsWith('STATUS='))!, /^STATUS=stopping: SIGTERM/);
  assert.ok(all.slice(stopping + 1).every((m) => !has(m, 'READY=1') && !has(m, 'WATCHDOG=1')), 'nothing but STOPPING once draining');
});

test('systemd-analyze verify accepts the unit loreley init writes', (t) => {
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) return t.skip('systemd-analyze is not installed');
  const directory = tempDir('loreley-unit-');
  writeServiceFiles(directory, { experimentId: 'circle-packing', workers: 4, drainTimeoutSeconds: 60 });
  const unit = readFileSync(path.join(directory, 'loreley.service'), 'utf8');
  assert.match(unit, new RegExp(`^ExecStart=${path.join(ROOT, 'bin', 'loreley-supervisor')} --workers 4$`, 'm'));
  for (const line of ['Type=notify', 'NotifyAccess=all', 'KillMode=mixed', 'Restart=on-failure', 'RestartPreventExitStatus=78', 'TimeoutStopSec=120', `WorkingDirectory=${directory}`]) {
    assert.ok(unit.split('\n').includes(line), `${line} in the unit`);
  }
  assert.doesNotMatch(unit, /\{\{/, 'every placeholder filled');
  // systemd-analyze exits 0 on some warnings: its output must be empty too.
  const target = path.join(directory, 'loreley-test.service');
  writeFileSync(target, unit);
  const verify = spawnSync('systemd-analyze', ['verify', target], { encoding: 'utf8' });
  assert.equal(verify.status, 0, verify.stderr);
  assert.equal(`${verify.stdout}${verify.stderr}`.trim(), '', 'no warnings');
});
