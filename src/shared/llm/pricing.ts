import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_PRICES_FILE } from '../settings/agent.ts';

/**
 * What a model call costs, from a price table in USD per million tokens. The shipped table is
 * `config/prices.json`; `LORELEY_PRICES_FILE` adds entries or overrides them. A model's price is
 * the entry with the longest name that the model's name starts with, so `gpt-4o-mini-2024-07-18`
 * is priced as `gpt-4o-mini`; a model with no entry (a local server) costs nothing.
 */

export interface ModelPrice {
  /** USD per 1M prompt tokens. */
  readonly prompt: number;
  /** USD per 1M completion tokens. */
  readonly completion: number;
}

export type PriceTable = ReadonlyMap<string, ModelPrice>;

function parsePriceFile(file: string): Map<string, ModelPrice> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`price table ${file} cannot be read: ${(error as Error).message}`);
  }
  const models = (parsed as { models?: unknown } | null)?.models;
  if (typeof models !== 'object' || models === null || Array.isArray(models)) {
    throw new Error(`price table ${file} must be {"models": {"<model>": {"prompt": <usd per 1M>, "completion": <usd per 1M>}}}`);
  }
  const table = new Map<string, ModelPrice>();
  for (const [name, entry] of Object.entries(models)) {
    const { prompt, completion } = (entry ?? {}) as { prompt?: unknown; completion?: unknown };
    if (typeof prompt !== 'number' || typeof completion !== 'number' || prompt < 0 || completion < 0) {
      throw new Error(`price table ${file}: ${JSON.stringify(name)} needs non-negative numbers "prompt" and "completion"`);
    }
    table.set(name.toLowerCase(), { prompt, completion });
  }
  return table;
}

/** The shipped table with the user's file over it. */
export function loadPriceTable(defaultFile: string, userFile?: string): PriceTable {
  const table = parsePriceFile(defaultFile);
  if (userFile) for (const [name, price] of parsePriceFile(userFile)) table.set(name, price);
  return table;
}

export function priceFor(table: PriceTable, model: string): ModelPrice | undefined {
  const name = model.toLowerCase();
  let best: string | undefined;
  for (const key of table.keys()) {
    if (name.startsWith(key) && (best === undefined || key.length > best.length)) best = key;
  }
  return best === undefined ? undefined : table.get(best);
}

export function costUsd(table: PriceTable, model: string, promptTokens: number, completionTokens: number): number {
  const price = priceFor(table, model);
  if (!price) return 0;
  return (promptTokens * price.prompt + completionTokens * price.completion) / 1_000_000;
}

/** The price table the settings name: the shipped one with `LORELEY_PRICES_FILE` over it. */
export function priceTableFromSettings(settings: { readonly cwd: string; readonly agent: { readonly pricesFile: string | undefined } }): PriceTable {
  const userFile = settings.agent.pricesFile === undefined ? undefined : path.resolve(settings.cwd, settings.agent.pricesFile);
  return loadPriceTable(DEFAULT_PRICES_FILE, userFile);
}
