// A real OpenID Connect provider (npm oidc-provider) on loopback, for seawall's UI sign-in tests.
//
// One static confidential client and an interaction that signs in whoever the relying party names
// in `login_hint` (default: the first test user) without a form, then grants the requested
// scopes. Started by tests/test_ui_oidc.py with:
//   PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI  (environment)
// and by tests/test_gateway_verified_users.py with these too (all optional):
//   JWKS           the provider's signing keys, a private JWKS as JSON (the first key signs);
//                  restarting with another JWKS is how the tests rotate keys
//   EXTRA_CLIENTS  more clients, a JSON array of client metadata (e.g. another app: another audience)
//   ID_TOKEN_CLAIMS=all   put the granted scopes' claims in ID tokens too (not only userinfo)
//   RESOURCE       an API identifier: client-credentials grants for it get JWT access tokens
// It prints one line, "ready <issuer>", once it listens. PORT=0 (or none): a port the OS picks when
// the server binds, named in that line (the issuer is made from the bound port): nobody else can
// take it in between, as they could a port picked beforehand and released for this process.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 0);

// The test users: accountId -> claims. Emails decide the seawall role (its allow-list).
const USERS = {
  'ada': { email: 'ada@example.org', email_verified: true, name: 'Ada Admin' },
  'rex': { email: 'rex@example.org', email_verified: true, name: 'Rex Reviewer' },
  'eve': { email: 'eve@example.org', email_verified: true, name: 'Eve Outsider' },
  'una': { email: 'ada@example.org', email_verified: false, name: 'Una Unverified' },
  // Trust tiers (the gateway's tests): payment and ID verification as an app's provider states them.
  'pia': { email: 'pia@example.org', email_verified: true, name: 'Pia Paid', payment_verified: true },
  'ida': { email: 'ida@example.org', email_verified: true, name: 'Ida Identified', id_verified: true },
};

const extraClients = process.env.EXTRA_CLIENTS ? JSON.parse(process.env.EXTRA_CLIENTS) : [];
const resource = process.env.RESOURCE;
const resourceIndicators = resource ? {
  enabled: true,
  defaultResource: () => resource,
  useGrantedResource: () => true,
  getResourceServerInfo: (ctx, indicator) => {
    if (indicator !== resource) throw new Error(`unknown resource ${indicator}`);
    return { scope: 'api', audience: resource, accessTokenFormat: 'jwt', accessTokenTTL: 300 };
  },
} : { enabled: false };

function makeProvider(issuer) {
  const made = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }, ...extraClients],
    ...(process.env.JWKS ? { jwks: JSON.parse(process.env.JWKS) } : {}),
    conformIdTokenClaims: process.env.ID_TOKEN_CLAIMS !== 'all',
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      verification: ['payment_verified', 'id_verified'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'verification', 'api'],
    cookies: { keys: ['seawall-test-only-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: Boolean(resource) },
      resourceIndicators,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...user }) };
    },
  });
  made.proxy = false;
  return made;
}
// Made once the server listens (the issuer names the bound port); no request arrives before.
let provider;
let callback;

// Sign in at once: login_hint picks the user; the grant covers the requested scopes.
async function interact(req, res) {
  const details = await provider.interactionDetails(req, res);
  const hint = details.params.login_hint;
  const accountId = USERS[hint] ? hint : 'ada';
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope || 'openid'));
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/interaction/')) {
    interact(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
    return;
  }
  callback(req, res);
});
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = makeProvider(issuer);
  callback = provider.callback();
  console.log(`ready ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
