import { CHILD_ENV } from '../shared/ipc.ts';
import { exitOnError, settingsOrExit } from './common.ts';
import { runChild } from './run-child.ts';

// Entry point of every supervised child: the supervisor says which role and slot in the environment.
const role = process.env[CHILD_ENV.role];
if (role !== 'worker' && role !== 'scheduler') {
  process.stderr.write(`loreley child: ${CHILD_ENV.role} must be worker or scheduler, got ${JSON.stringify(role)}\n`);
  process.exit(1);
}
const settings = settingsOrExit({}, `loreley ${role}`);
await runChild({ role, settings, workerId: process.env[CHILD_ENV.workerId] }).catch((error) => exitOnError(`loreley ${role}`, error));
