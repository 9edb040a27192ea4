/** One schema change. A released migration is never edited; add a new one. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}
