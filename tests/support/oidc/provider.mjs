// A certified OpenID Provider (panva's oidc-provider) for the sign-in tests, on 127.0.0.1 only.
//
// Settings come from the environment:
//   OIDC_PORT            port to listen on (0 or unset: any free port)
//   OIDC_CLIENTS         JSON list of clients: {client_id, client_secret, redirect_uris,
//                        post_logout_redirect_uris}
//   OIDC_EMAIL_DOMAIN    the e-mail domain of the accounts (default school.test)
//   LESFOCUS_TEST_CLOCK_SHIFT_DAYS  the clock-shifted test runs move this process's clock too,
//                        so its tokens are as fresh as the Python side expects.
// Each start makes a new RSA signing key with a new `kid`: restarting is a key rotation.
// The accounts are the dev interactions' "any login": the login typed is the account id; its
// e-mail is the login itself when it holds an "@", else login@OIDC_EMAIL_DOMAIN.
// Prints one JSON line {"issuer": ..., "kid": ...} on stdout once it listens.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

const shiftDays = Number(process.env.LESFOCUS_TEST_CLOCK_SHIFT_DAYS || 0);
if (shiftDays) {
  const shiftMs = shiftDays * 86400 * 1000;
  const RealDate = Date;
  const realNow = RealDate.now.bind(RealDate);
  class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + shiftMs);
      else super(...args);
    }

    static now() { return realNow() + shiftMs; }
  }
  globalThis.Date = ShiftedDate;
}

const { default: Provider } = await import('oidc-provider');

const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]').map((client) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...client,
}));
const emailDomain = process.env.OIDC_EMAIL_DOMAIN || 'school.test';
const kid = `k-${randomBytes(6).toString('hex')}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' };

const server = http.createServer();
await new Promise((resolve) => { server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(24).toString('hex')] },
  // The claims of the scopes go into the ID token too (Entra ID and Google put e-mail there).
  conformIdTokenClaims: false,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  async findAccount(ctx, id) {
    const email = id.includes('@') ? id : `${id}@${emailDomain}`;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email, email_verified: true, preferred_username: id, name: id };
      },
    };
  },
});
// Errors are the tests' business (they look at what the relying party does), not noise here.
provider.on('server_error', (ctx, error) => { process.stderr.write(`server_error ${error}\n`); });

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer, kid })}\n`);
process.on('SIGTERM', () => { server.close(); process.exit(0); });
