// SAML 2.0 service provider (issue 9): being written; until it lands a configured SAML provider
// stops the start with this error instead of pretending to work.
import type { ProviderFactory } from './types.js';

export const createSamlProvider: ProviderFactory = (config) => {
  throw new Error(`sso provider ${config.name}: SAML is not available in this build yet`);
};
