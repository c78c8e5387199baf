// validate-jwt-policy.md (and api-management-error-handling-policies.md for the LastError reasons).
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>Base64url and JWS helpers.</summary>
    public static class JwsCodec
    {
        public static byte[] FromBase64Url(string s)
        {
            if (s == null) throw new FormatException("null");
            var t = s.Replace('-', '+').Replace('_', '/');
            switch (t.Length % 4)
            {
                case 2: t += "=="; break;
                case 3: t += "="; break;
                case 1: throw new FormatException("bad base64url length");
            }
            return Convert.FromBase64String(t);
        }

        public static string ToBase64Url(byte[] b)
        {
            return Convert.ToBase64String(b).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        }

        public static JObject DecodeSegment(string seg)
        {
            var json = Encoding.UTF8.GetString(FromBase64Url(seg));
            using (var r = new JsonTextReader(new System.IO.StringReader(json)) { DateParseHandling = DateParseHandling.None })
            {
                var t = JToken.ReadFrom(r);
                var o = t as JObject;
                if (o == null) throw new FormatException("not a JSON object");
                return o;
            }
        }

        public static HashAlgorithmName HashFor(string alg)
        {
            switch (alg.Substring(2))
            {
                case "256": return HashAlgorithmName.SHA256;
                case "384": return HashAlgorithmName.SHA384;
                case "512": return HashAlgorithmName.SHA512;
                default: throw new NotSupportedException(alg);
            }
        }

        public static bool VerifyRsa(string alg, RSAParameters key, byte[] data, byte[] sig)
        {
            using (var rsa = new RSACryptoServiceProvider())
            {
                rsa.ImportParameters(key);
                return rsa.VerifyData(data, sig, HashFor(alg), RSASignaturePadding.Pkcs1);
            }
        }

        public static bool VerifyHmac(string alg, byte[] key, byte[] data, byte[] sig)
        {
            HMAC h;
            switch (alg)
            {
                case "HS256": h = new HMACSHA256(key); break;
                case "HS384": h = new HMACSHA384(key); break;
                case "HS512": h = new HMACSHA512(key); break;
                default: return false;
            }
            using (h)
            {
                var mac = h.ComputeHash(data);
                if (mac.Length != sig.Length) return false;
                int diff = 0;
                for (int i = 0; i < mac.Length; i++) diff |= mac[i] ^ sig[i];
                return diff == 0;
            }
        }
    }

    /// <summary>One signing key of an OpenID provider's JWKS (RSA only: the gateway verifies RS256/384/512).</summary>
    public sealed class JwksKey
    {
        /// <summary>The JWK's kid; null when it has none.</summary>
        public string Id;
        public RSAParameters Rsa;
    }

    /// <summary>What validate-jwt uses from an OpenID provider: the metadata's issuer and its JWKS's signing keys.</summary>
    public sealed class OpenIdProvider
    {
        public string MetadataUrl;
        public string Issuer;
        public string JwksUri;
        public List<JwksKey> Keys;
        public DateTime FetchedAt;
    }

    /// <summary>The OpenID metadata or its JWKS could not be fetched or read.</summary>
    public sealed class OpenIdConfigurationException : Exception
    {
        public OpenIdConfigurationException(string message, Exception inner = null) : base(message, inner) { }
    }

    /// <summary>
    /// validate-jwt &lt;openid-config url="..."/&gt;: the provider's metadata (OpenID Connect Discovery:
    /// issuer, jwks_uri) and its JWKS, fetched on first use and cached per metadata URL for an hour.
    /// When a token's kid is not among the cached keys, the keys are refetched, at most once every
    /// five minutes per URL (key rotation). A failed refresh keeps serving the previous copy; a
    /// failed first fetch is remembered for a few seconds, so that concurrent requests do not each
    /// wait for the same unreachable provider. Thread-safe; one instance per gateway (Services).
    /// </summary>
    public sealed class OpenIdConfigCache
    {
        public static readonly TimeSpan Lifetime = TimeSpan.FromHours(1);
        public static readonly TimeSpan MinRefreshInterval = TimeSpan.FromMinutes(5);
        public static readonly TimeSpan RetryAfterFailure = TimeSpan.FromSeconds(5);
        /// <summary>Timeout of each of the two requests (metadata, JWKS).</summary>
        public const int TimeoutMs = 10000;
        private const int MaxDocumentBytes = 1024 * 1024;

        private sealed class Entry
        {
            public readonly object Lock = new object();
            public OpenIdProvider Value;
            public DateTime ExpiresAt;
            public DateTime LastFetch = DateTime.MinValue;
            public OpenIdConfigurationException Failure;
            public DateTime FailureUntil;
        }

        private readonly Services services;
        private readonly ConcurrentDictionary<string, Entry> entries = new ConcurrentDictionary<string, Entry>(StringComparer.Ordinal);

        public OpenIdConfigCache(Services services) { this.services = services; }

        /// <summary>The provider behind the metadata URL, from the cache or fetched now. Throws OpenIdConfigurationException.</summary>
        public OpenIdProvider Get(string url)
        {
            var e = entries.GetOrAdd(url, _ => new Entry());
            lock (e.Lock)
            {
                var now = services.Clock.UtcNow;
                if (e.Value != null && now < e.ExpiresAt) return e.Value;
                return Fetch(url, e, now);
            }
        }

        /// <summary>
        /// A token's kid is not among the provider's keys: refetches them, unless they were fetched
        /// less than MinRefreshInterval ago. Returns the provider (refreshed or not).
        /// </summary>
        public OpenIdProvider RefreshForUnknownKey(string url)
        {
            var e = entries.GetOrAdd(url, _ => new Entry());
            lock (e.Lock)
            {
                var now = services.Clock.UtcNow;
                if (e.Value != null && now - e.LastFetch < MinRefreshInterval) return e.Value;
                return Fetch(url, e, now);
            }
        }

        private OpenIdProvider Fetch(string url, Entry e, DateTime now)
        {
            if (e.Value == null && e.Failure != null && now < e.FailureUntil) throw e.Failure;
            try
            {
                var p = Load(url);
                p.FetchedAt = now;
                e.Value = p;
                e.ExpiresAt = now + Lifetime;
                e.LastFetch = now;
                e.Failure = null;
                services.Log("validate-jwt: loaded OpenID configuration " + url + " (issuer " + p.Issuer + ", " + p.Keys.Count + " RSA signing key(s))");
                return p;
            }
            catch (OpenIdConfigurationException ex)
            {
                e.LastFetch = now;
                if (e.Value != null)
                {
                    services.Log("validate-jwt: " + ex.Message + "; keeping the copy from " + e.Value.FetchedAt.ToString("u"));
                    e.ExpiresAt = now + RetryAfterFailure;
                    return e.Value;
                }
                e.Failure = ex;
                e.FailureUntil = now + RetryAfterFailure;
                throw;
            }
        }

        private static OpenIdProvider Load(string url)
        {
            var meta = FetchJson(url, "the OpenID configuration");
            var issuer = meta["issuer"] != null && meta["issuer"].Type == JTokenType.String ? (string)meta["issuer"] : null;
            if (string.IsNullOrEmpty(issuer))
                throw new OpenIdConfigurationException("the OpenID configuration " + url + " has no \"issuer\"");
            var jwksUri = meta["jwks_uri"] != null && meta["jwks_uri"].Type == JTokenType.String ? (string)meta["jwks_uri"] : null;
            Uri ju;
            if (string.IsNullOrEmpty(jwksUri))
                throw new OpenIdConfigurationException("the OpenID configuration " + url + " has no \"jwks_uri\"");
            if (!Uri.TryCreate(jwksUri, UriKind.Absolute, out ju) || (ju.Scheme != "http" && ju.Scheme != "https"))
                throw new OpenIdConfigurationException("the OpenID configuration " + url + " has a \"jwks_uri\" that is not an absolute http or https URL: \"" + jwksUri + "\"");
            var jwks = FetchJson(jwksUri, "the JWKS");
            var keys = jwks["keys"] as JArray;
            if (keys == null)
                throw new OpenIdConfigurationException("the JWKS " + jwksUri + " (jwks_uri of " + url + ") has no \"keys\" array");
            return new OpenIdProvider { MetadataUrl = url, Issuer = issuer, JwksUri = jwksUri, Keys = RsaKeys(keys) };
        }

        /// <summary>The JWKS's RSA signature keys (n and e, or else the first x5c certificate); other keys are skipped.</summary>
        private static List<JwksKey> RsaKeys(JArray keys)
        {
            var list = new List<JwksKey>();
            foreach (var k in keys.OfType<JObject>())
            {
                if ((string)k["kty"] != "RSA") continue;
                var use = k["use"] != null && k["use"].Type == JTokenType.String ? (string)k["use"] : null;
                if (use != null && use != "sig") continue;
                var kid = k["kid"] != null && k["kid"].Type != JTokenType.Null ? k["kid"].ToString() : null;
                try
                {
                    var n = k["n"] != null && k["n"].Type == JTokenType.String ? (string)k["n"] : null;
                    var e = k["e"] != null && k["e"].Type == JTokenType.String ? (string)k["e"] : null;
                    if (!string.IsNullOrEmpty(n) && !string.IsNullOrEmpty(e))
                    {
                        list.Add(new JwksKey { Id = kid, Rsa = new RSAParameters { Modulus = ValidateJwtPolicy.TrimZero(JwsCodec.FromBase64Url(n)), Exponent = JwsCodec.FromBase64Url(e) } });
                        continue;
                    }
                    var x5c = k["x5c"] as JArray;
                    if (x5c != null && x5c.Count > 0 && x5c[0].Type == JTokenType.String)
                    {
                        var cert = new X509Certificate2(Convert.FromBase64String((string)x5c[0]));
                        var rsa = cert.PublicKey.Key as RSA;
                        if (rsa != null) list.Add(new JwksKey { Id = kid, Rsa = rsa.ExportParameters(false) });
                    }
                }
                catch (Exception ex) when (ex is FormatException || ex is CryptographicException)
                {
                    // a malformed key cannot verify anything: skip it, as a token naming it finds no key
                }
            }
            return list;
        }

        private static JObject FetchJson(string url, string what)
        {
            ResponseState r;
            try
            {
                var req = new BackendRequest { Method = "GET", Url = url, TimeoutMs = TimeoutMs, FollowRedirects = true };
                req.Headers.Set("Accept", "application/json");
                r = BackendClient.Send(req);
            }
            catch (BackendException e)
            {
                throw new OpenIdConfigurationException("cannot fetch " + what + " " + url + ": " + e.Message, e);
            }
            if (r.StatusCode < 200 || r.StatusCode > 299)
                throw new OpenIdConfigurationException("cannot fetch " + what + " " + url + ": it answered " + r.StatusCode + " " + r.StatusReason);
            var body = r.Body ?? new byte[0];
            if (body.Length > MaxDocumentBytes)
                throw new OpenIdConfigurationException(what + " " + url + " is larger than " + MaxDocumentBytes + " bytes");
            try
            {
                using (var reader = new JsonTextReader(new System.IO.StringReader(Http.Utf8.GetString(body))) { DateParseHandling = DateParseHandling.None })
                {
                    var o = JToken.ReadFrom(reader) as JObject;
                    if (o == null) throw new OpenIdConfigurationException(what + " " + url + " is not a JSON object");
                    return o;
                }
            }
            catch (JsonException e)
            {
                throw new OpenIdConfigurationException(what + " " + url + " is not valid JSON: " + e.Message, e);
            }
        }
    }

    /// <summary>
    /// validate-jwt issuer-signing-keys: RSA keys given as n and e, parsed once per distinct (n, e)
    /// and reused by every request of the gateway (one per Services). Thread-safe.
    /// </summary>
    public sealed class RsaKeyCache
    {
        private readonly ConcurrentDictionary<string, RSAParameters> keys = new ConcurrentDictionary<string, RSAParameters>();

        /// <summary>The key of base64url modulus n and exponent e; FormatException when they are not base64url.</summary>
        public RSAParameters Get(string n, string e)
        {
            return keys.GetOrAdd(n + "." + e, _ => new RSAParameters { Modulus = ValidateJwtPolicy.TrimZero(JwsCodec.FromBase64Url(n)), Exponent = JwsCodec.FromBase64Url(e) });
        }
    }

    /// <summary>
    /// validate-jwt-policy.md. Token from header-name (for Authorization, "Bearer &lt;token&gt;"; with
    /// require-scheme the scheme must match), query-parameter-name or token-value. Checks, in order:
    /// format, signature (issuer-signing-keys: RSA n+e for RS256/384/512, base64 text for HS256/384/512;
    /// openid-config: the RSA keys of the provider's JWKS; the alg must match the key type; a key with
    /// id only matches the token's kid), exp (required by default) and nbf with clock-skew, audiences,
    /// issuers (those of &lt;issuers&gt; and of every openid-config's metadata), required-claims.
    /// An openid-config that cannot be fetched is an error (500 through on-error, LastError.Reason
    /// "OpenIdConfigurationUnavailable"), not a token failure. A failure answers
    /// failed-validation-httpcode (default 401) with {"statusCode":N,"message":"..."} and goes to
    /// on-error with LastError.Source "validate-jwt" and the documented Reason.
    /// </summary>
    public sealed class ValidateJwtPolicy : IPolicy
    {
        private sealed class Key
        {
            public string Id;
            public bool IsRsa;
            public RSAParameters Rsa;
            public byte[] Secret;
        }

        public void Execute(PolicyNode node, Exec exec)
        {
            if (node.ChildrenNamed("decryption-keys").Any())
                throw new PolicyException(node.Name, "NotSupported", "validate-jwt <decryption-keys> (encrypted tokens) is not supported by the local gateway", node.Where);

            int code = exec.AttrInt(node, "failed-validation-httpcode", 401);
            string custom = exec.AttrString(node, "failed-validation-error-message");
            Func<string, string, Exception> fail = (reason, message) =>
                new PolicyResponseException(node.Name, reason, message, node.Where,
                    Http.StatusMessage(code, custom ?? (reason == "TokenNotPresent" ? "JWT not present." : "Invalid JWT.")));

            var token = ReadToken(node, exec);
            if (string.IsNullOrEmpty(token)) throw fail("TokenNotPresent", "JWT not present.");

            var seg = token.Split('.');
            if (seg.Length == 5) throw fail("JwtInvalid", "Encrypted tokens (JWE) are not supported.");
            if (seg.Length != 3) throw fail("JwtInvalid", "The token is not a well formed JWT: it must have three segments.");
            JObject header, payload;
            try { header = JwsCodec.DecodeSegment(seg[0]); payload = JwsCodec.DecodeSegment(seg[1]); }
            catch (Exception) { throw fail("JwtInvalid", "The token is not a well formed JWT: its header or payload is not base64url JSON."); }

            var alg = (string)header["alg"] ?? "";
            var kid = header["kid"] != null ? header["kid"].ToString() : null;
            var providers = OpenIdProviders(node, exec);
            bool requireSigned = exec.AttrBool(node, "require-signed-tokens", true);
            if (alg == "none" || seg[2].Length == 0)
            {
                if (requireSigned) throw fail("TokenSignatureInvalid", "The token is not signed. Access denied.");
            }
            else CheckSignature(node, exec, fail, alg, kid, seg, providers);

            var now = exec.Services.Clock.UtcNow;
            int skew = exec.AttrInt(node, "clock-skew", 0);
            bool requireExp = exec.AttrBool(node, "require-expiration-time", true);
            double exp, nbf;
            bool hasExp = TryNumber(payload["exp"], out exp), hasNbf = TryNumber(payload["nbf"], out nbf);
            if (payload["exp"] != null && !hasExp) throw fail("JwtInvalid", "The token's exp claim is not a number.");
            if (payload["nbf"] != null && !hasNbf) throw fail("JwtInvalid", "The token's nbf claim is not a number.");
            if (!hasExp && requireExp) throw fail("JwtInvalid", "Lifetime validation failed. The token is missing an Expiration Time.");
            var epoch = new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);
            if (hasExp && now > epoch.AddSeconds(exp).AddSeconds(skew))
                throw fail("TokenExpired", "Lifetime validation failed. The token is expired. ValidTo: '" + epoch.AddSeconds(exp).ToString("u") + "', Current time: '" + now.ToString("u") + "'. Access denied.");
            if (hasNbf && now.AddSeconds(skew) < epoch.AddSeconds(nbf))
                throw fail("JwtInvalid", "Lifetime validation failed. The token is not yet valid. ValidFrom: '" + epoch.AddSeconds(nbf).ToString("u") + "', Current time: '" + now.ToString("u") + "'.");

            var audNode = node.ChildrenNamed("audiences").FirstOrDefault();
            if (audNode != null)
            {
                var allowed = P.Values(exec, audNode, "audience");
                var aud = Strings(payload["aud"]);
                if (!aud.Any(a => allowed.Contains(a, StringComparer.Ordinal)))
                    throw fail("TokenAudienceNotAllowed", "Audience validation failed. Audiences: '" + string.Join(", ", aud) + "'. Did not match any allowed audience. Access denied.");
            }
            var issNode = node.ChildrenNamed("issuers").FirstOrDefault();
            if (issNode != null || providers.Count > 0)
            {
                // openid-config supplies the issuer too (validate-jwt-policy.md): the metadata's issuer
                // is allowed besides those listed in <issuers>.
                var allowed = issNode != null ? P.Values(exec, issNode, "issuer").ToList() : new List<string>();
                allowed.AddRange(providers.Select(p => p.Value.Issuer));
                var iss = payload["iss"] != null && payload["iss"].Type == JTokenType.String ? (string)payload["iss"] : null;
                if (iss == null || !allowed.Contains(iss, StringComparer.Ordinal))
                    throw fail("TokenIssuerNotAllowed", "Issuer validation failed. Issuer: '" + iss + "'. Did not match any allowed issuer. Access denied.");
            }
            var claimsNode = node.ChildrenNamed("required-claims").FirstOrDefault();
            if (claimsNode != null) CheckClaims(exec, claimsNode, payload, fail);

            var outVar = P.LiteralAttr(node, "output-token-variable-name");
            if (!string.IsNullOrEmpty(outVar))
            {
                Jwt jwt;
                if (!Jwt.TryParse(token, out jwt)) throw fail("JwtInvalid", "The token could not be parsed.");
                exec.Variables[outVar] = jwt;
            }
        }

        private static string ReadToken(PolicyNode node, Exec exec)
        {
            if (node.Attribute("token-value") != null) return (exec.AttrString(node, "token-value", "") ?? "").Trim();
            if (node.Attribute("header-name") != null)
            {
                var name = exec.AttrString(node, "header-name", "");
                var raw = exec.Request.Headers.Joined(name);
                if (raw == null) return null;
                raw = raw.Trim();
                if (!string.Equals(name, "Authorization", StringComparison.OrdinalIgnoreCase)) return raw;
                var scheme = exec.AttrString(node, "require-scheme");
                int sp = raw.IndexOf(' ');
                if (!string.IsNullOrEmpty(scheme))
                {
                    if (sp < 0 || !string.Equals(raw.Substring(0, sp), scheme, StringComparison.OrdinalIgnoreCase)) return null;
                    return raw.Substring(sp + 1).Trim();
                }
                return sp < 0 ? raw : raw.Substring(sp + 1).Trim();
            }
            if (node.Attribute("query-parameter-name") != null)
            {
                var name = exec.AttrString(node, "query-parameter-name", "");
                var v = exec.Request.Url.Query.Get(name);
                return v == null ? null : v.FirstOrDefault();
            }
            throw P.Config(node, "one of header-name, query-parameter-name or token-value is required");
        }

        /// <summary>
        /// The providers of the policy's openid-config elements (metadata URL to provider), from the
        /// gateway's cache or fetched now. A URL that is not absolute http(s) is a configuration
        /// error; a provider that cannot be reached is an OpenIdConfigurationUnavailable error.
        /// </summary>
        private static List<KeyValuePair<string, OpenIdProvider>> OpenIdProviders(PolicyNode node, Exec exec)
        {
            var list = new List<KeyValuePair<string, OpenIdProvider>>();
            foreach (var oc in node.ChildrenNamed("openid-config"))
            {
                var url = (exec.AttrString(oc, "url", "") ?? "").Trim();
                Uri u;
                if (!Uri.TryCreate(url, UriKind.Absolute, out u) || (u.Scheme != "http" && u.Scheme != "https"))
                    throw P.Config(oc, "the url of <openid-config> must be an absolute http or https URL, not \"" + url + "\"");
                try { list.Add(new KeyValuePair<string, OpenIdProvider>(url, exec.Services.OpenIdConfigs.Get(url))); }
                catch (OpenIdConfigurationException e)
                {
                    throw new PolicyException(node.Name, "OpenIdConfigurationUnavailable",
                        "validate-jwt <openid-config>: " + e.Message, oc.Where, e);
                }
            }
            return list;
        }

        private static void CheckSignature(PolicyNode node, Exec exec, Func<string, string, Exception> fail, string alg, string kid, string[] seg,
            List<KeyValuePair<string, OpenIdProvider>> providers)
        {
            bool rsaAlg = alg == "RS256" || alg == "RS384" || alg == "RS512";
            bool hmacAlg = alg == "HS256" || alg == "HS384" || alg == "HS512";
            if (!rsaAlg && !hmacAlg)
                throw fail("TokenSignatureInvalid", "Signature algorithm '" + alg + "' is not supported (the local gateway supports RS256/384/512 and HS256/384/512). Access denied.");
            var keys = Keys(node, exec);
            Func<List<Key>> matching = () => keys.Concat(ProviderKeys(providers)).Where(k => k.Id == null || kid == null || k.Id == kid).ToList();
            var byId = matching();
            if (byId.Count == 0 && kid != null && providers.Count > 0)
            {
                // Key rotation: the provider may have published a new key since its JWKS was cached.
                for (int i = 0; i < providers.Count; i++)
                {
                    OpenIdProvider fresh;
                    try { fresh = exec.Services.OpenIdConfigs.RefreshForUnknownKey(providers[i].Key); }
                    catch (OpenIdConfigurationException) { continue; } // keep the copy already in hand
                    providers[i] = new KeyValuePair<string, OpenIdProvider>(providers[i].Key, fresh);
                }
                byId = matching();
            }
            if (byId.Count == 0)
                throw fail("TokenSignatureKeyNotFound", "Signature key was not resolved by ID '" + kid + "'. Access denied.");
            var typed = byId.Where(k => k.IsRsa == rsaAlg).ToList();
            if (typed.Count == 0)
                throw fail("TokenSignatureInvalid", "Signature validation failed: the token's algorithm " + alg + " does not match the type of any signing key. Access denied.");
            byte[] sig;
            try { sig = JwsCodec.FromBase64Url(seg[2]); }
            catch (Exception) { throw fail("JwtInvalid", "The token's signature is not base64url."); }
            var data = Encoding.ASCII.GetBytes(seg[0] + "." + seg[1]);
            foreach (var k in typed)
            {
                bool ok;
                try { ok = k.IsRsa ? JwsCodec.VerifyRsa(alg, k.Rsa, data, sig) : JwsCodec.VerifyHmac(alg, k.Secret, data, sig); }
                catch (CryptographicException) { ok = false; }
                if (ok) return;
            }
            throw fail("TokenSignatureInvalid", "Signature validation failed. Access denied.");
        }

        private static IEnumerable<Key> ProviderKeys(List<KeyValuePair<string, OpenIdProvider>> providers)
        {
            return providers.SelectMany(p => p.Value.Keys).Select(k => new Key { Id = k.Id, IsRsa = true, Rsa = k.Rsa });
        }

        private static List<Key> Keys(PolicyNode node, Exec exec)
        {
            var list = new List<Key>();
            var ks = node.ChildrenNamed("issuer-signing-keys").FirstOrDefault();
            if (ks == null) return list;
            foreach (var k in ks.ChildrenNamed("key"))
            {
                if (k.Attribute("certificate-id") != null)
                    throw new PolicyException(node.Name, "NotSupported",
                        "validate-jwt <key certificate-id> is not supported by the local gateway (no certificates); use n and e", k.Where);
                var id = exec.AttrString(k, "id");
                var n = exec.AttrString(k, "n");
                var e = exec.AttrString(k, "e");
                if (n != null || e != null)
                {
                    if (string.IsNullOrEmpty(n) || string.IsNullOrEmpty(e)) throw P.Config(k, "an RSA key needs both n and e");
                    RSAParameters p;
                    try
                    {
                        p = exec.Services.RsaKeys.Get(n, e);
                    }
                    catch (FormatException) { throw P.Config(k, "n and e must be base64url"); }
                    list.Add(new Key { Id = id, IsRsa = true, Rsa = p });
                    continue;
                }
                var text = exec.EvalString(k.Text, "");
                if (string.IsNullOrEmpty(text)) throw P.Config(k, "a key needs n and e, certificate-id, or base64 text");
                byte[] secret;
                try { secret = Convert.FromBase64String(text.Trim()); }
                catch (FormatException) { throw P.Config(k, "a symmetric key must be base64"); }
                list.Add(new Key { Id = id, IsRsa = false, Secret = secret });
            }
            return list;
        }

        internal static byte[] TrimZero(byte[] b)
        {
            int i = 0;
            while (i < b.Length - 1 && b[i] == 0) i++;
            return i == 0 ? b : b.Skip(i).ToArray();
        }

        private static void CheckClaims(Exec exec, PolicyNode claimsNode, JObject payload, Func<string, string, Exception> fail)
        {
            var claims = claimsNode.ChildrenNamed("claim").ToList();
            var missing = claims.Select(c => exec.AttrString(c, "name", "")).Where(n => payload[n] == null || payload[n].Type == JTokenType.Null).ToList();
            if (missing.Count > 0)
                throw fail("TokenClaimNotFound", "JWT token is missing the following claims: " + string.Join(", ", missing) + ". Access denied.");
            foreach (var c in claims)
            {
                var name = exec.AttrString(c, "name", "");
                var match = (exec.AttrString(c, "match", "all") ?? "all").ToLowerInvariant();
                if (match != "all" && match != "any") throw P.Config(c, "match must be all or any");
                var sep = exec.AttrString(c, "separator");
                var expected = P.Values(exec, c);
                if (expected.Count == 0) continue;
                var actual = Strings(payload[name]);
                if (!string.IsNullOrEmpty(sep)) actual = actual.SelectMany(a => a.Split(new[] { sep }, StringSplitOptions.RemoveEmptyEntries)).ToList();
                bool ok = match == "all" ? expected.All(v => actual.Contains(v)) : expected.Any(v => actual.Contains(v));
                if (!ok)
                    throw fail("TokenClaimValueNotAllowed", "Claim " + name + " value of " + string.Join(",", actual) + " is not allowed. Access denied.");
            }
        }

        private static List<string> Strings(JToken t)
        {
            if (t == null || t.Type == JTokenType.Null) return new List<string>();
            if (t.Type == JTokenType.Array) return t.Children().Select(Scalar).ToList();
            return new List<string> { Scalar(t) };
        }

        private static string Scalar(JToken t)
        {
            if (t.Type == JTokenType.Boolean) return (bool)t ? "true" : "false";
            if (t.Type == JTokenType.String) return (string)t;
            if (t is JValue) return Convert.ToString(((JValue)t).Value, System.Globalization.CultureInfo.InvariantCulture);
            return t.ToString(Formatting.None);
        }

        private static bool TryNumber(JToken t, out double v)
        {
            v = 0;
            if (t == null || (t.Type != JTokenType.Integer && t.Type != JTokenType.Float)) return false;
            v = (double)t;
            return true;
        }
    }
}
