import type { Settings } from './settings/index.ts';

/** API keys from the settings (environment or .env) and the environment, to scrub from every log line. */
export function apiKeys(settings: Settings): string[] {
  const key = settings.agent.openai.apiKey.reveal();
  return [key, settings.agent.anthropicApiKey.reveal(), process.env.OPENAI_API_KEY, process.env.ANTHROPIC_API_KEY].filter((s): s is string => Boolean(s) && s !== 'no-key');
}
