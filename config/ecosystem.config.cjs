// pm2 process file for the Loreley experiment in {{DIRECTORY}}, written by `loreley init`.
//
//   pm2 start ecosystem.config.cjs     start it (pm2 waits until every worker is ready)
//   pm2 stop {{NAME}}                  drain: jobs in hand finish or go back to the queue
//   pm2 delete {{NAME}}                stop and forget it
//   kill -HUP $(pm2 pid {{NAME}})      rolling reload: new code and .env, no job lost
//
// Loreley writes its own JSONL logs under logs/ beside this file (`loreley logs`, `tail -f`), so
// pm2 keeps no copy of them: the console lines are off and pm2's out file goes nowhere; its error
// file keeps what happens before Loreley's log is open (a configuration error, say).
module.exports = {
  apps: [
    {
      name: '{{NAME}}',
      cwd: '{{DIRECTORY}}',
      // The launcher finds a Node that can run Loreley and execs it: pm2 watches that pid.
      script: '{{SUPERVISOR}}',
      interpreter: 'none',
      args: ['--workers', '{{WORKERS}}'],
      // The supervisor forks its workers itself (node:cluster): one pm2 process, fork mode.
      exec_mode: 'fork',
      instances: 1,
      // Ready once every child is up (the supervisor sends 'ready'); the embedded database and
      // migrations come first.
      wait_ready: true,
      listen_timeout: 120000,
      // pm2 stops with SIGINT (its PM2_KILL_SIGNAL): the supervisor drains, as on SIGTERM, and
      // exits 130. It needs the drain timeout ({{DRAIN_SECONDS}} s) plus its own grace to hand jobs
      // back and stop the database; pm2 SIGKILLs after kill_timeout.
      // The signal goes to the supervisor alone: pm2's default tree kill would also hit the agent
      // and evaluator commands of jobs in hand, failing them instead of letting them finish.
      treekill: false,
      kill_timeout: {{KILL_TIMEOUT_MS}},
      // 0 is a clean stop (--exit-when-done), 78 a configuration error that a restart cannot fix.
      stop_exit_codes: [0, 78],
      autorestart: true,
      min_uptime: 10000,
      max_restarts: 10,
      restart_delay: 5000,
      exp_backoff_restart_delay: 1000,
      out_file: '/dev/null',
      merge_logs: true,
      time: true,
      env: {
        LOG_CONSOLE: 'false',
      },
    },
  ],
};
