// entra-standin.mjs: a local stand-in for Microsoft Entra ID (v2 endpoints), for `make run`
// and the system tests (handler/testenv StartSystem). A thin layer around the npm package
// oauth2-mock-server, which does the HTTP serving, the signing key and its JWKS, the discovery
// document, the authorization code and PKCE bookkeeping and the token signing; this file adds
// the Entra shape and the checks the mock leaves out ("it performs no validation of incoming
// requests"). Run it with Node.js 22:
//
//   node scripts/entra-standin.mjs --port 8400 --host 127.0.0.1 --client-id <EntraClientId> \
//     --assertion-jwks http://localhost:8000/.local-gateway/managed-identity/jwks.json \
//     [--tenant-issuer-prefix http://127.0.0.1:8400/] [--redirect-uri <uri>]... \
//     [--assertion-subject <principal id>] [--assertion-issuer <iss>] [--assertion-audience <aud>]
//
// It prints "listening on http://<host>:<port>" once ready (--port 0 picks a free port) and
// stops on SIGTERM or SIGINT. One line per request goes to stderr (method, path, status and
// the error code; never a query string, code or token).
//
// What it emulates (the tenant path segment is accepted and ignored; "organizations" in URLs):
// - GET  /<tenant>/oauth2/v2.0/authorize: no sign-in page; it signs in at once, as the user
//   named by login_hint=<tid>:<oid>[:<name>] (GUIDs), else a fixed local user (the same ids
//   as the handler's MCP_AUTH=off user). login_hint=!<error>[:<description>] answers with that
//   OAuth error instead (e.g. !access_denied), to test error paths; any other login_hint
//   without ':' (an e-mail address) is ignored, as a prefill. Checks, like Entra: client_id
//   (unknown: an error page, no redirect), redirect_uri (exact match with a --redirect-uri
//   when any is given; else any absolute URL), response_type=code, no `resource` parameter
//   (Entra v2 rejects it), a scope. Stricter than Entra: PKCE is required and only S256,
//   response_mode only query. Redirects back with code, state and session_state; the code
//   remembers the user, client, redirect_uri, scope, nonce and code_challenge, lives 10
//   minutes and is redeemed once.
// - POST /<tenant>/oauth2/v2.0/token: form body; grant_type=authorization_code only; the
//   right client_id; no client secret (neither client_secret nor HTTP Basic: the app has
//   none); client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer and a
//   client_assertion JWT verified (RS256) against the JWKS fetched from --assertion-jwks, with
//   iss --assertion-issuer (https://local-gateway/managed-identity, the local gateway's
//   managed identity), aud --assertion-audience (api://AzureADTokenExchange) and, if given,
//   sub --assertion-subject: a federated identity credential; the code, for this client and
//   redirect_uri, not expired nor redeemed (a failed redemption burns it); code_verifier
//   matching the S256 challenge. Errors are Entra-like JSON (error, error_description with an
//   AADSTS code, error_codes, timestamp, trace_id, correlation_id), 400 or 401.
//   Success: id_token (RS256, the mock's key) with aud = client id, iss =
//   <tenant-issuer-prefix><tid>/v2.0, tid, oid, sub (pairwise per app, like Entra), name,
//   preferred_username, nonce (echoed), iat, nbf, exp, ver 2.0; an access_token (a JWT for
//   Microsoft Graph, opaque to the caller); no refresh_token unless offline_access was asked.
// - GET /<tenant>/v2.0/.well-known/openid-configuration and /<tenant>/discovery/v2.0/keys:
//   the discovery document (issuer <prefix>{tenantid}/v2.0, or <prefix><tid>/v2.0 when the
//   tenant segment is a GUID) and the JWKS of the mock's signing key;
//   GET /<tenant>/oauth2/v2.0/logout: the mock's end-session endpoint.
//
// What it does not emulate: sign-in pages, passwords, MFA, consent, conditional access;
// multi-tenant app registration rules (any tid may sign in: the gateway's allowed-tenants
// check is the one under test); other grants (refresh_token, client_credentials, on-behalf-of,
// device code), implicit and hybrid flows, form_post; v1 endpoints and tokens; Graph and
// userinfo; key rotation (one key per process); token lifetime policies. Everything is in
// memory and lost when the process stops.
import { Readable } from 'node:stream';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Events, HttpServer, OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const usage = `usage: node scripts/entra-standin.mjs --client-id <id> --assertion-jwks <url>
  [--port 0] [--host 127.0.0.1] [--tenant-issuer-prefix <url ending in />]
  [--redirect-uri <uri>]... [--assertion-issuer <iss>] [--assertion-audience <aud>]
  [--assertion-subject <sub>]`;

let opts;
try {
  opts = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'client-id': { type: 'string' },
      'tenant-issuer-prefix': { type: 'string' },
      'redirect-uri': { type: 'string', multiple: true, default: [] },
      'assertion-jwks': { type: 'string' },
      'assertion-issuer': { type: 'string', default: 'https://local-gateway/managed-identity' },
      'assertion-audience': { type: 'string', default: 'api://AzureADTokenExchange' },
      'assertion-subject': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  }).values;
} catch (e) {
  console.error(`entra-standin: ${e.message}\n${usage}`);
  process.exit(2);
}
if (opts.help) {
  console.log(usage);
  process.exit(0);
}
if (!opts['client-id'] || !opts['assertion-jwks']) {
  console.error(`entra-standin: --client-id and --assertion-jwks are required\n${usage}`);
  process.exit(2);
}
const clientId = opts['client-id'];
const redirectUris = opts['redirect-uri'];
const assertionKeys = createRemoteJWKSet(new URL(opts['assertion-jwks']), {
  timeoutDuration: 5000,
  cooldownDuration: 1000, // the gateway makes a new key each time it starts
});

// Same ids as the handler's MCP_AUTH=off user (handler/auth/local.go), so `make run` data
// stays the same user's with auth on or off.
const localUser = {
  tid: '00000000-0000-0000-0000-000000000000',
  oid: '00000000-0000-0000-0000-000000000001',
  name: 'Local developer',
  preferred_username: 'local@localhost',
};
const codeLifetimeMs = 10 * 60 * 1000;
const guid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const graphAppId = '00000003-0000-0000-c000-000000000000';

// The Entra path shapes; the tenant segment is remembered (for the discovery document) and
// replaced by "organizations", where the mock's endpoints are configured.
const T = '/organizations';
const endpoints = {
  wellKnownDocument: `${T}/v2.0/.well-known/openid-configuration`,
  authorize: `${T}/oauth2/v2.0/authorize`,
  token: `${T}/oauth2/v2.0/token`,
  jwks: `${T}/discovery/v2.0/keys`,
  endSession: `${T}/oauth2/v2.0/logout`,
  // Entra has no such endpoints here: unreachable (the listener routes Entra paths only).
  userinfo: '/-/userinfo',
  revoke: '/-/revoke',
  introspect: '/-/introspect',
};
const entraPath = /^\/([A-Za-z0-9._-]+)\/(oauth2\/v2\.0\/(?:authorize|token|logout)|discovery\/v2\.0\/keys|v2\.0\/\.well-known\/openid-configuration)\/?$/;

const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer, endpoints);
await issuer.keys.generate('RS256');
let prefix; // --tenant-issuer-prefix, or the origin + "/" once listening

// code -> { user, redirectUri, scope, challenge, expires, redeemed }
const codes = new Map();

function entraError(res, status, error, aadsts, description) {
  const now = new Date();
  const traceId = randomUUID();
  const body = {
    error,
    error_description: `AADSTS${aadsts}: ${description} Trace ID: ${traceId} Correlation ID: ${traceId} Timestamp: ${now.toISOString()}`,
    error_codes: [aadsts],
    timestamp: now.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    trace_id: traceId,
    correlation_id: traceId,
    error_uri: `${issuer.url}/error?code=${aadsts}`,
  };
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(JSON.stringify(body));
  res.entraNote = `${error} AADSTS${aadsts}`;
}

// Entra shows an error page (no redirect) when it cannot trust the client or its redirect URI.
function errorPage(res, aadsts, description) {
  res.statusCode = 400;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.end(`<!doctype html><title>Sign in error</title><h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS${aadsts}: ${escapeHtml(description)}</p>`);
  res.entraNote = `error page AADSTS${aadsts}`;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function errorRedirect(res, redirectUri, state, error, description) {
  const url = new URL(redirectUri);
  url.searchParams.set('error', error);
  url.searchParams.set('error_description', description);
  if (state) url.searchParams.set('state', state);
  res.statusCode = 302;
  res.setHeader('Location', url.href);
  res.end();
  res.entraNote = `redirect ${error}`;
}

function userFromHint(hint) {
  const [tid, oid, ...rest] = hint.split(':');
  if (!guid.test(tid ?? '') || !guid.test(oid ?? '')) return null;
  const name = rest.join(':') || `User ${oid.slice(0, 8)}`;
  const local = name.toLowerCase().replace(/[^a-z0-9]+/g, '.').replace(/^\.|\.$/g, '') || 'user';
  return {
    tid: tid.toLowerCase(),
    oid: oid.toLowerCase(),
    name,
    preferred_username: `${local}@t-${tid.slice(0, 8).toLowerCase()}.example`,
  };
}

// authorize checks what Entra checks before the mock issues a code; it answers and returns
// false on a failure, else stores the chosen user on req for the BeforeAuthorizeRedirect hook.
function authorize(req, res) {
  const q = new URL(req.url, 'http://x').searchParams;
  const one = (k) => (q.getAll(k).length > 1 ? undefined : (q.get(k) ?? undefined));
  const cid = one('client_id');
  if (!cid) return errorPage(res, 900144, "The request body must contain the following parameter: 'client_id'."), false;
  if (cid !== clientId) return errorPage(res, 700016, `Application with identifier '${cid}' was not found in the directory.`), false;
  const redirectUri = one('redirect_uri');
  let parsed;
  try {
    parsed = redirectUri && new URL(redirectUri);
  } catch {
    parsed = undefined;
  }
  if (!parsed) return errorPage(res, 900144, "The request must contain a valid absolute 'redirect_uri'."), false;
  if (redirectUris.length > 0 && !redirectUris.includes(redirectUri)) {
    return errorPage(res, 50011, `The redirect URI '${redirectUri}' specified in the request does not match the redirect URIs configured for the application '${clientId}'.`), false;
  }
  const state = one('state');
  const fail = (error, description) => (errorRedirect(res, redirectUri, state, error, description), false);
  if (one('response_type') !== 'code') return fail('unsupported_response_type', 'AADSTS700054: this stand-in supports response_type=code only.');
  const mode = one('response_mode');
  if (mode !== undefined && mode !== 'query') return fail('invalid_request', 'AADSTS900144: this stand-in supports response_mode=query only.');
  if (q.has('resource')) return fail('invalid_request', "AADSTS901002: The 'resource' request parameter is not supported.");
  const scope = one('scope');
  if (!scope) return fail('invalid_request', "AADSTS900144: The request body must contain the following parameter: 'scope'.");
  const challenge = one('code_challenge');
  if (!challenge) return fail('invalid_request', 'AADSTS9002325: Proof Key for Code Exchange is required (this stand-in requires it of every client).');
  if (one('code_challenge_method') !== 'S256') return fail('invalid_request', 'AADSTS501491: Invalid code_challenge_method: this stand-in accepts S256 only.');
  if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) return fail('invalid_request', 'AADSTS501491: Invalid size of code_challenge parameter.');

  const hint = one('login_hint') ?? '';
  let user = localUser;
  if (hint.startsWith('!')) {
    const [error, ...desc] = hint.slice(1).split(':');
    return fail(error || 'access_denied', desc.join(':') || 'AADSTS65004: User declined to consent to access the app.');
  } else if (hint.includes(':')) {
    user = userFromHint(hint);
    if (!user) return errorPage(res, 50034, `login_hint '${hint}' is not <tid>:<oid>[:<name>] with GUIDs.`), false;
  }
  req.entra = { user, redirectUri, scope, challenge };
  return true;
}

// The mock made the code: remember who it is for.
service.on(Events.BeforeAuthorizeRedirect, (redirect, req) => {
  const code = redirect.url.searchParams.get('code');
  if (!req.entra || !code) return;
  const now = Date.now();
  for (const [c, r] of codes) if (r.expires < now - codeLifetimeMs) codes.delete(c);
  codes.set(code, { ...req.entra, expires: now + codeLifetimeMs, redeemed: false });
  redirect.url.searchParams.set('session_state', randomUUID());
});

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1 << 20) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// tokenChecks validates a token request; it answers and returns null on a failure, else the
// code's record.
async function tokenChecks(req, res, raw) {
  if (!(req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded')) {
    return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'. (form-encoded body expected)"), null;
  }
  const form = new URLSearchParams(raw.toString('utf8'));
  const one = (k) => (form.getAll(k).length > 1 ? undefined : (form.get(k) ?? undefined));
  const grant = one('grant_type');
  if (!grant) return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'grant_type'."), null;
  if (grant !== 'authorization_code') return entraError(res, 400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grant}' (this stand-in supports authorization_code only).`), null;
  const cid = one('client_id');
  if (!cid) return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'client_id'."), null;
  if (cid !== clientId) return entraError(res, 400, 'unauthorized_client', 700016, `Application with identifier '${cid}' was not found in the directory.`), null;
  if (form.has('client_secret') || /^basic\s/i.test(req.headers.authorization ?? '')) {
    return entraError(res, 401, 'invalid_client', 7000215, 'Invalid client secret provided. The application has no client secret; it authenticates with a federated credential (client_assertion).'), null;
  }
  const assertion = one('client_assertion');
  if (!assertion) return entraError(res, 401, 'invalid_client', 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."), null;
  if (one('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    return entraError(res, 401, 'invalid_client', 7000216, "'client_assertion_type' must be 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'."), null;
  }
  try {
    await jwtVerify(assertion, assertionKeys, {
      algorithms: ['RS256'],
      issuer: opts['assertion-issuer'],
      audience: opts['assertion-audience'],
      subject: opts['assertion-subject'],
      requiredClaims: ['exp', 'sub'],
      clockTolerance: 300,
    });
  } catch (e) {
    const [aadsts, why] = {
      ERR_JWT_EXPIRED: [700024, 'Client assertion is not within its valid time range.'],
      ERR_JWS_SIGNATURE_VERIFICATION_FAILED: [700027, 'Client assertion failed signature validation.'],
      ERR_JWKS_NO_MATCHING_KEY: [700027, 'Client assertion failed signature validation: no key of the federated issuer matches its kid.'],
      ERR_JWKS_MULTIPLE_MATCHING_KEYS: [700027, 'Client assertion failed signature validation.'],
      ERR_JOSE_ALG_NOT_ALLOWED: [700027, 'Client assertion failed signature validation: RS256 expected.'],
      ERR_JWT_CLAIM_VALIDATION_FAILED: { iss: [700211, 'No matching federated identity record found for presented assertion issuer.'], aud: [700212, 'No matching federated identity record found for presented assertion audience.'], sub: [70021, 'No matching federated identity record found for presented assertion subject.'] }[e.claim] ?? [700024, `Client assertion claim '${e.claim}' is invalid.`],
      ERR_JWKS_TIMEOUT: [700027, `Could not fetch the federated issuer's keys from ${opts['assertion-jwks']} (timeout).`],
      ERR_JWKS_INVALID: [700027, `The federated issuer's keys at ${opts['assertion-jwks']} are not a JWKS.`],
    }[e.code] ?? (e.code?.startsWith('ERR_JW')
      ? [50027, `Client assertion is invalid or malformed (${e.message}).`]
      : [700027, `Could not fetch the federated issuer's keys from ${opts['assertion-jwks']} (${e.message}).`]);
    return entraError(res, 401, 'invalid_client', aadsts, why), null;
  }
  const code = one('code');
  if (!code) return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'code'."), null;
  const rec = codes.get(code);
  if (!rec) return entraError(res, 400, 'invalid_grant', 9002313, 'Invalid request. Request is malformed or invalid. (unknown authorization code)'), null;
  if (rec.redeemed) return entraError(res, 400, 'invalid_grant', 54005, 'OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.'), null;
  rec.redeemed = true; // from here on a failure burns the code
  if (rec.expires < Date.now()) return entraError(res, 400, 'invalid_grant', 70008, 'The provided authorization code or refresh token has expired due to inactivity.'), null;
  if (one('redirect_uri') !== rec.redirectUri) return entraError(res, 400, 'invalid_grant', 500112, 'The reply address does not match the reply address provided when requesting Authorization code.'), null;
  const verifier = one('code_verifier');
  if (!verifier) return entraError(res, 400, 'invalid_request', 900144, "The request body must contain the following parameter: 'code_verifier'."), null;
  if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || createHash('sha256').update(verifier).digest('base64url') !== rec.challenge) {
    return entraError(res, 400, 'invalid_grant', 50148, 'The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.'), null;
  }
  return rec;
}

// The mock signs the access token first and the id_token second; the id_token is the one
// whose transform set aud (the client id). Both get Entra's claims here.
service.on(Events.BeforeTokenSigning, (token, req) => {
  const rec = req.entra;
  if (!rec) return;
  const { tid, oid, name, preferred_username } = rec.user;
  const p = token.payload;
  if (p.aud === clientId) {
    Object.assign(p, {
      iss: `${prefix}${tid}/v2.0`,
      sub: createHash('sha256').update(`${clientId}\n${tid}\n${oid}`).digest('base64url'),
      tid,
      oid,
      name,
      preferred_username,
      ver: '2.0',
      uti: randomBytes(16).toString('base64url'),
    });
    delete p.amr;
    delete p.scope;
  } else {
    Object.assign(p, {
      iss: `https://sts.windows.net/${tid}/`,
      aud: graphAppId,
      sub: randomBytes(32).toString('base64url'),
      tid,
      oid,
      name,
      appid: clientId,
      scp: rec.scope.split(' ').filter((s) => !['openid', 'offline_access'].includes(s)).join(' ') || 'User.Read',
      ver: '1.0',
    });
    delete p.scope;
    delete p.amr;
  }
});

service.on(Events.BeforeResponse, (response, req) => {
  const rec = req.entra;
  if (!rec || response.statusCode !== 200) return;
  const scopes = rec.scope.split(' ');
  response.body.scope = rec.scope;
  response.body.ext_expires_in = response.body.expires_in;
  if (!scopes.includes('offline_access')) delete response.body.refresh_token;
  if (!scopes.includes('openid')) delete response.body.id_token;
});

service.on(Events.BeforeWellKnownOpenIdConfiguration, (response, req) => {
  const tenant = req.tenant ?? 'organizations';
  const base = `${issuer.url}/${tenant}`;
  response.body = {
    issuer: `${prefix}${guid.test(tenant) ? tenant.toLowerCase() : '{tenantid}'}/v2.0`,
    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
    token_endpoint: `${base}/oauth2/v2.0/token`,
    jwks_uri: `${base}/discovery/v2.0/keys`,
    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
    token_endpoint_auth_methods_supported: ['private_key_jwt'],
    response_modes_supported: ['query'],
    response_types_supported: ['code'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    code_challenge_methods_supported: ['S256'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'nonce', 'preferred_username', 'name', 'tid', 'oid', 'ver'],
    request_uri_parameter_supported: false,
    tenant_region_scope: null,
    cloud_instance_name: 'local-entra-standin',
  };
});

async function listener(req, res) {
  const started = Date.now();
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  res.on('finish', () => {
    console.error(`entra-standin: ${req.method} ${path} -> ${res.statusCode}${res.entraNote ? ` (${res.entraNote})` : ''} ${Date.now() - started}ms`);
  });
  const m = entraPath.exec(path);
  if (!m) {
    res.statusCode = 404;
    res.end();
    return;
  }
  req.tenant = m[1];
  const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
  req.url = `${T}/${m[2]}${query}`;

  if (req.method === 'GET' && m[2] === 'oauth2/v2.0/authorize') {
    if (authorize(req, res)) service.requestHandler(req, res);
    return;
  }
  if (req.method === 'POST' && m[2] === 'oauth2/v2.0/token') {
    const raw = await readBody(req);
    const rec = await tokenChecks(req, res, raw);
    if (!rec) return;
    // The mock reads the body itself: hand it a replay of the request, carrying the code's
    // record for the hooks above. It checks PKCE again and echoes the code's nonce.
    const replay = Readable.from([raw]);
    Object.assign(replay, { method: req.method, url: req.url, headers: req.headers, socket: req.socket, entra: rec });
    service.requestHandler(replay, res);
    return;
  }
  service.requestHandler(req, res);
}

const server = new HttpServer((req, res) => {
  listener(req, res).catch((e) => {
    console.error('entra-standin: internal error:', e);
    if (!res.headersSent) entraError(res, 500, 'server_error', 90000, 'The stand-in failed; see its log.');
    else res.destroy();
  });
});

await server.start(Number(opts.port), opts.host);
const { port } = server.address();
const hostInUrl = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
issuer.url = `http://${hostInUrl}:${port}`;
prefix = opts['tenant-issuer-prefix'] ?? `${issuer.url}/`;
if (!prefix.endsWith('/')) prefix += '/';
console.log(`listening on ${issuer.url}`);

let stopping = false;
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    // Connections still open after a second are not waited for.
    setTimeout(() => process.exit(0), 1000).unref();
    server.stop().then(() => process.exit(0), () => process.exit(0));
  });
}
