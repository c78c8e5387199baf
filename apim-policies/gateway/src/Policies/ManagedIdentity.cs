// authentication-managed-identity-policy.md, emulated: instead of asking Entra for a token of
// APIM's managed identity, the gateway mints one itself, signed RS256 with a key generated at
// start; its JWKS is served at GET /.local-gateway/managed-identity/jwks.json so a local Entra
// stand-in can be told to trust these assertions (e.g. as a federated credential).
using System;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Threading;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>
    /// The emulated managed identity of one gateway (one Services): its signing key, generated once
    /// on first use (or by Prewarm), and the tokens minted with it, cached per resource and client id.
    /// Thread-safe: requests run on a thread each.
    /// </summary>
    public sealed class ManagedIdentity
    {
        public const string Issuer = "https://local-gateway/managed-identity";
        /// <summary>The object id of the emulated managed identity (sub and oid of every token).</summary>
        public const string PrincipalId = "6d1a0f0e-5c4b-4f3e-9a2d-0c1b2a3f4e5d";
        public const string JwksPath = "/.local-gateway/managed-identity/jwks.json";
        private static readonly TimeSpan Lifetime = TimeSpan.FromHours(1);

        private readonly Services services;
        private readonly Lazy<RSAParameters> key = new Lazy<RSAParameters>(Generate, LazyThreadSafetyMode.ExecutionAndPublication);
        private readonly Lazy<string> kid;
        private readonly ConcurrentDictionary<string, Tuple<string, DateTime>> tokens = new ConcurrentDictionary<string, Tuple<string, DateTime>>();

        public ManagedIdentity(Services services)
        {
            this.services = services;
            kid = new Lazy<string>(() =>
            {
                using (var sha = SHA256.Create())
                    return JwsCodec.ToBase64Url(sha.ComputeHash(key.Value.Modulus)).Substring(0, 16);
            }, LazyThreadSafetyMode.ExecutionAndPublication);
        }

        /// <summary>Starts generating the key in the background so the first request does not wait for it.</summary>
        public void Prewarm()
        {
            ThreadPool.QueueUserWorkItem(_ => { var k = key.Value; });
        }

        private static RSAParameters Generate()
        {
            using (var rsa = new RSACryptoServiceProvider(2048))
            {
                rsa.PersistKeyInCsp = false;
                return rsa.ExportParameters(true);
            }
        }

        /// <summary>kid of the key: the start of the base64url SHA-256 of its modulus.</summary>
        public string KeyId { get { return kid.Value; } }

        /// <summary>The JWKS (public part of the signing key) served at JwksPath.</summary>
        public string Jwks()
        {
            var k = key.Value;
            var jwk = new JObject
            {
                ["kty"] = "RSA", ["use"] = "sig", ["alg"] = "RS256", ["kid"] = KeyId,
                ["n"] = JwsCodec.ToBase64Url(k.Modulus), ["e"] = JwsCodec.ToBase64Url(k.Exponent),
            };
            return new JObject { ["keys"] = new JArray(jwk) }.ToString(Formatting.None);
        }

        /// <summary>A token for resource, reused until five minutes before it expires (APIM caches them too).</summary>
        public string TokenFor(string resource, string clientId)
        {
            var now = services.Clock.UtcNow;
            var cacheKey = resource + "\n" + (clientId ?? "");
            Tuple<string, DateTime> t;
            if (tokens.TryGetValue(cacheKey, out t) && t.Item2 - now > TimeSpan.FromMinutes(5)) return t.Item1;
            var exp = now + Lifetime;
            var token = Mint(resource, clientId, now, exp);
            tokens[cacheKey] = Tuple.Create(token, exp);
            return token;
        }

        private string Mint(string resource, string clientId, DateTime now, DateTime exp)
        {
            long iat = (long)(now - new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc)).TotalSeconds;
            long e = (long)(exp - new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc)).TotalSeconds;
            var header = new JObject { ["alg"] = "RS256", ["typ"] = "JWT", ["kid"] = KeyId };
            var claims = new JObject
            {
                ["iss"] = Issuer, ["sub"] = PrincipalId, ["oid"] = PrincipalId, ["aud"] = resource,
                ["iat"] = iat, ["nbf"] = iat, ["exp"] = e, ["jti"] = Guid.NewGuid().ToString(),
            };
            if (!string.IsNullOrEmpty(clientId)) claims["appid"] = clientId;
            var input = JwsCodec.ToBase64Url(Encoding.UTF8.GetBytes(header.ToString(Formatting.None))) + "." +
                        JwsCodec.ToBase64Url(Encoding.UTF8.GetBytes(claims.ToString(Formatting.None)));
            byte[] sig;
            using (var rsa = new RSACryptoServiceProvider())
            {
                rsa.PersistKeyInCsp = false;
                rsa.ImportParameters(key.Value);
                sig = rsa.SignData(Encoding.ASCII.GetBytes(input), HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            }
            return input + "." + JwsCodec.ToBase64Url(sig);
        }
    }

    /// <summary>
    /// authentication-managed-identity-policy.md: gets a token for resource (locally minted, see
    /// ManagedIdentity) and sets Authorization: Bearer &lt;token&gt; on the request, or stores the
    /// token in output-token-variable-name. Inside send-request it applies to that request.
    /// </summary>
    public sealed class AuthenticationManagedIdentityPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            Apply(node, exec, exec.Request.Headers);
        }

        public static void Apply(PolicyNode node, Exec exec, MultiMap headers)
        {
            var resource = P.Required(exec, node, "resource");
            var clientId = P.LiteralAttr(node, "client-id");
            var outVar = P.LiteralAttr(node, "output-token-variable-name");
            bool ignoreError = exec.AttrBool(node, "ignore-error", false);
            string token;
            try { token = exec.Services.ManagedIdentity.TokenFor(resource, clientId); }
            catch (Exception e)
            {
                if (ignoreError) { exec.Services.Log("authentication-managed-identity failed (ignore-error): " + e.Message); return; }
                throw new PolicyException(node.Name, "ManagedIdentityTokenFailure", "could not get a managed identity token: " + e.Message, node.Where, e);
            }
            if (!string.IsNullOrEmpty(outVar)) exec.Variables[outVar] = token;
            else headers.Set("Authorization", "Bearer " + token);
        }
    }
}
