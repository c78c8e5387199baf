// The emulated `context` object that compiled policy expressions see, with the
// members documented for APIM (shared/reference/apim/expressions.md section 3),
// and the documented extension methods (GetValueOrDefault, AsJwt, AsBasic, ...).
// Every view reads the live state of its Exec, so a value read after a policy
// changed the request or response sees the change.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Xml.Linq;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    // ---- the documented interfaces ----

    public interface IContextSurface
    {
        IApi Api { get; }
        IDeployment Deployment { get; }
        /// <summary>Time since Timestamp.</summary>
        TimeSpan Elapsed { get; }
        /// <summary>The error being handled in on-error; null when there is none.</summary>
        ILastError LastError { get; }
        IOperation Operation { get; }
        /// <summary>Always null: the local gateway has no products.</summary>
        IProduct Product { get; }
        IRequest Request { get; }
        Guid RequestId { get; }
        IResponse Response { get; }
        /// <summary>Always null: the local gateway has no subscriptions.</summary>
        ISubscription Subscription { get; }
        DateTime Timestamp { get; }
        /// <summary>Always false.</summary>
        bool Tracing { get; }
        /// <summary>Always null: the local gateway has no users.</summary>
        IUser User { get; }
        IReadOnlyDictionary<string, object> Variables { get; }
        void Trace(string message);
    }

    public interface IApi
    {
        string Id { get; }
        string Name { get; }
        string Path { get; }
        IEnumerable<string> Protocols { get; }
        IUrl ServiceUrl { get; }
        ISubscriptionKeyParameterNames SubscriptionKeyParameterNames { get; }
        string Version { get; }
        string Revision { get; }
        bool IsCurrentRevision { get; }
    }

    public interface ISubscriptionKeyParameterNames
    {
        string Header { get; }
        string Query { get; }
    }

    public interface IDeployment
    {
        string GatewayId { get; }
        string Region { get; }
        string ServiceId { get; }
        string ServiceName { get; }
        IReadOnlyDictionary<string, X509Certificate2> Certificates { get; }
    }

    public interface ILastError
    {
        string Source { get; }
        string Reason { get; }
        string Message { get; }
        string Scope { get; }
        string Section { get; }
        string Path { get; }
        string PolicyId { get; }
    }

    public interface IOperation
    {
        string Id { get; }
        string Method { get; }
        string Name { get; }
        string UrlTemplate { get; }
    }

    public enum ProductState { NotPublished, Published }

    public interface IGroup
    {
        string Id { get; }
        string Name { get; }
    }

    public interface IProduct
    {
        IEnumerable<IApi> Apis { get; }
        bool ApprovalRequired { get; }
        IEnumerable<IGroup> Groups { get; }
        string Id { get; }
        string Name { get; }
        ProductState State { get; }
        int? SubscriptionLimit { get; }
        bool SubscriptionRequired { get; }
    }

    public interface ISubscription
    {
        DateTime CreatedDate { get; }
        DateTime? EndDate { get; }
        string Id { get; }
        string Key { get; }
        string Name { get; }
        string PrimaryKey { get; }
        string SecondaryKey { get; }
        DateTime? StartDate { get; }
    }

    public interface IUserIdentity
    {
        string Id { get; }
        string Provider { get; }
    }

    public interface IUser
    {
        string Email { get; }
        string FirstName { get; }
        IEnumerable<IGroup> Groups { get; }
        string Id { get; }
        IEnumerable<IUserIdentity> Identities { get; }
        string LastName { get; }
        string Note { get; }
        DateTime RegistrationDate { get; }
    }

    public interface IPrivateEndpointConnection
    {
        string Name { get; }
        string GroupId { get; }
        string MemberName { get; }
    }

    public interface IUrl
    {
        string Host { get; }
        /// <summary>The path with its leading '/'.</summary>
        string Path { get; }
        int Port { get; }
        IReadOnlyDictionary<string, string[]> Query { get; }
        /// <summary>The query with its leading '?', or "" when there is none.</summary>
        string QueryString { get; }
        string Scheme { get; }
        string ToString();
        Uri ToUri();
    }

    public interface IMessageBody
    {
        /// <summary>
        /// The body as string, byte[], JObject, JToken, JArray, XNode, XElement or XDocument.
        /// Without preserveContent the body is consumed: it is empty afterwards (also for forwarding).
        /// </summary>
        T As<T>(bool preserveContent = false);
        /// <summary>The body parsed as application/x-www-form-urlencoded.</summary>
        IDictionary<string, IList<string>> AsFormUrlEncodedContent(bool preserveContent = false);
    }

    public interface IRequest
    {
        /// <summary>The body, or null when the request has none.</summary>
        IMessageBody Body { get; }
        /// <summary>Always null: the local gateway takes no client certificates.</summary>
        X509Certificate2 Certificate { get; }
        IReadOnlyDictionary<string, string[]> Headers { get; }
        string IpAddress { get; }
        IReadOnlyDictionary<string, string> MatchedParameters { get; }
        string Method { get; }
        IUrl OriginalUrl { get; }
        IUrl Url { get; }
        IPrivateEndpointConnection PrivateEndpointConnection { get; }
    }

    /// <summary>context.Response, and the response send-request stores in its variable.</summary>
    public interface IResponse
    {
        IMessageBody Body { get; }
        IReadOnlyDictionary<string, string[]> Headers { get; }
        int StatusCode { get; }
        string StatusReason { get; }
    }

    // ---- the implementation over an Exec ----

    public static class ContextSurface
    {
        public const string Region = "local";
        public const string ServiceName = "local";
        public const string GatewayId = "managed";

        /// <summary>The context of one request (set as Services.ContextFactory).</summary>
        public static IContextSurface For(Exec exec)
        {
            if (exec == null) throw new ArgumentNullException("exec");
            return new ContextImpl(exec);
        }

        /// <summary>The IResponse a send-request stores in its response variable.</summary>
        public static IResponse ResponseFrom(ResponseState r)
        {
            if (r == null) return null;
            return new ResponseView(() => r);
        }

        private static readonly byte[] Empty = new byte[0];

        private sealed class ContextImpl : IContextSurface
        {
            private readonly Exec exec;
            private readonly RequestView request;
            private readonly ResponseView response;
            private readonly LiveDictionary<object> variables;

            public ContextImpl(Exec exec)
            {
                this.exec = exec;
                request = new RequestView(exec);
                response = new ResponseView(() => exec.Response);
                variables = new LiveDictionary<object>(() => exec.Variables);
            }

            public IApi Api { get { return exec.Api == null ? null : new ApiView(exec.Api); } }
            public IDeployment Deployment { get { return DeploymentView.Instance; } }
            public TimeSpan Elapsed { get { return exec.Elapsed; } }
            public ILastError LastError { get { return exec.LastError == null ? null : new LastErrorView(exec.LastError); } }
            public IOperation Operation { get { return exec.Operation == null ? null : new OperationView(exec.Operation); } }
            public IProduct Product { get { return null; } }
            public IRequest Request { get { return request; } }
            public Guid RequestId { get { return exec.RequestId; } }
            public IResponse Response { get { return response; } }
            public ISubscription Subscription { get { return null; } }
            public DateTime Timestamp { get { return exec.Timestamp; } }
            public bool Tracing { get { return false; } }
            public IUser User { get { return null; } }
            public IReadOnlyDictionary<string, object> Variables { get { return variables; } }
            public void Trace(string message)
            {
                var log = exec.Services != null ? exec.Services.Log : null;
                if (log != null) log("context.Trace: " + message);
            }
        }

        private sealed class ApiView : IApi
        {
            private readonly ApiDef api;
            public ApiView(ApiDef api) { this.api = api; }
            public string Id { get { return api.Name; } }
            public string Name { get { return BundleLoader.DisplayName(api); } }
            public string Path { get { return api.Path ?? ""; } }
            public IEnumerable<string> Protocols { get { return new[] { "https" }; } }
            public IUrl ServiceUrl
            {
                get
                {
                    if (string.IsNullOrEmpty(api.ServiceUrl)) return null;
                    try { var u = UrlState.Parse(api.ServiceUrl); return new UrlView(() => u); }
                    catch (UriFormatException) { return null; }
                }
            }
            public ISubscriptionKeyParameterNames SubscriptionKeyParameterNames { get { return KeyNames.Instance; } }
            public string Version { get { return ""; } }
            public string Revision { get { return "1"; } }
            public bool IsCurrentRevision { get { return true; } }
        }

        private sealed class KeyNames : ISubscriptionKeyParameterNames
        {
            public static readonly KeyNames Instance = new KeyNames();
            public string Header { get { return "Ocp-Apim-Subscription-Key"; } }
            public string Query { get { return "subscription-key"; } }
        }

        private sealed class DeploymentView : IDeployment
        {
            public static readonly DeploymentView Instance = new DeploymentView();
            private static readonly IReadOnlyDictionary<string, X509Certificate2> none =
                new System.Collections.ObjectModel.ReadOnlyDictionary<string, X509Certificate2>(new Dictionary<string, X509Certificate2>());
            public string GatewayId { get { return ContextSurface.GatewayId; } }
            public string Region { get { return ContextSurface.Region; } }
            public string ServiceId { get { return ContextSurface.ServiceName; } }
            public string ServiceName { get { return ContextSurface.ServiceName; } }
            public IReadOnlyDictionary<string, X509Certificate2> Certificates { get { return none; } }
        }

        private sealed class LastErrorView : ILastError
        {
            private readonly LastErrorInfo e;
            public LastErrorView(LastErrorInfo e) { this.e = e; }
            public string Source { get { return e.Source; } }
            public string Reason { get { return e.Reason; } }
            public string Message { get { return e.Message; } }
            public string Scope { get { return e.Scope; } }
            public string Section { get { return e.Section; } }
            public string Path { get { return e.Path; } }
            public string PolicyId { get { return e.PolicyId; } }
        }

        private sealed class OperationView : IOperation
        {
            private readonly OperationDef op;
            public OperationView(OperationDef op) { this.op = op; }
            public string Id { get { return op.Name; } }
            public string Method { get { return op.Method; } }
            public string Name { get { return BundleLoader.DisplayName(op); } }
            public string UrlTemplate { get { return op.UrlTemplate; } }
        }

        private sealed class RequestView : IRequest
        {
            private readonly Exec exec;
            private MessageBody body;
            private readonly MultiMapView headers;
            private readonly UrlView url, originalUrl;
            private readonly LiveDictionary<string> matched;

            public RequestView(Exec exec)
            {
                this.exec = exec;
                headers = new MultiMapView(() => exec.Request.Headers);
                url = new UrlView(() => exec.Request.Url);
                originalUrl = new UrlView(() => exec.Request.OriginalUrl);
                matched = new LiveDictionary<string>(() => exec.Request.MatchedParameters);
            }

            public IMessageBody Body
            {
                get
                {
                    // null while the request has no body; once handed out, the body object stays
                    // (a consumed body reads as empty, as in APIM).
                    if (body == null)
                    {
                        var b = exec.Request.Body;
                        if (b == null || b.Length == 0) return null;
                        body = new MessageBody(
                            () => exec.Request.Body,
                            () => exec.Request.Body = new byte[0],
                            () => exec.Request.Headers.Joined("Content-Type"));
                    }
                    return body;
                }
            }
            public X509Certificate2 Certificate { get { return null; } }
            public IReadOnlyDictionary<string, string[]> Headers { get { return headers; } }
            public string IpAddress { get { return exec.Request.ClientIp; } }
            public IReadOnlyDictionary<string, string> MatchedParameters { get { return matched; } }
            public string Method { get { return exec.Request.Method; } }
            public IUrl OriginalUrl { get { return originalUrl; } }
            public IUrl Url { get { return url; } }
            public IPrivateEndpointConnection PrivateEndpointConnection { get { return null; } }
        }

        private sealed class ResponseView : IResponse
        {
            private readonly Func<ResponseState> state;
            private readonly MessageBody body;
            private readonly MultiMapView headers;

            public ResponseView(Func<ResponseState> state)
            {
                this.state = state;
                body = new MessageBody(
                    () => state().BufferBody(),
                    () => { var s = state(); s.BufferBody(); s.Body = new byte[0]; },
                    () => state().Headers.Joined("Content-Type"));
                headers = new MultiMapView(() => state().Headers);
            }

            public IMessageBody Body { get { return body; } }
            public IReadOnlyDictionary<string, string[]> Headers { get { return headers; } }
            public int StatusCode { get { return state().StatusCode; } }
            public string StatusReason { get { return state().StatusReason; } }
        }

        private sealed class MessageBody : IMessageBody
        {
            private readonly Func<byte[]> read;
            private readonly Action consume;
            private readonly Func<string> contentType;

            public MessageBody(Func<byte[]> read, Action consume, Func<string> contentType)
            {
                this.read = read;
                this.consume = consume;
                this.contentType = contentType;
            }

            private byte[] Take(bool preserveContent)
            {
                var data = read() ?? Empty;
                if (!preserveContent) consume();
                return data;
            }

            public T As<T>(bool preserveContent = false)
            {
                var t = typeof(T);
                if (t != typeof(string) && t != typeof(byte[]) && t != typeof(JObject) && t != typeof(JToken) && t != typeof(JArray)
                    && t != typeof(XNode) && t != typeof(XElement) && t != typeof(XDocument))
                    throw new InvalidOperationException("Body.As<" + t.Name + ">() is not supported; use string, byte[], JObject, JToken, JArray, XNode, XElement or XDocument");
                var data = Take(preserveContent);
                if (t == typeof(byte[])) return (T)(object)(byte[])data.Clone();
                string text = Decode(data, contentType());
                if (t == typeof(string)) return (T)(object)text;
                if (t == typeof(JObject)) return (T)(object)JObject.Parse(text);
                if (t == typeof(JToken)) return (T)(object)JToken.Parse(text);
                if (t == typeof(JArray)) return (T)(object)JArray.Parse(text);
                if (t == typeof(XElement)) return (T)(object)XElement.Parse(text);
                return (T)(object)XDocument.Parse(text); // XDocument, XNode
            }

            public IDictionary<string, IList<string>> AsFormUrlEncodedContent(bool preserveContent = false)
            {
                string text = Decode(Take(preserveContent), contentType());
                var result = new Dictionary<string, IList<string>>(StringComparer.Ordinal);
                foreach (var e in UrlState.ParseQuery(text).Entries)
                    result[e.Key] = new List<string>(e.Value);
                return result;
            }
        }

        internal static string Decode(byte[] data, string contentType)
        {
            Encoding enc = new UTF8Encoding(false);
            if (!string.IsNullOrEmpty(contentType))
            {
                foreach (var part in contentType.Split(';').Skip(1))
                {
                    var kv = part.Split(new[] { '=' }, 2);
                    if (kv.Length == 2 && kv[0].Trim().Equals("charset", StringComparison.OrdinalIgnoreCase))
                    {
                        try { enc = Encoding.GetEncoding(kv[1].Trim().Trim('"')); } catch (ArgumentException) { }
                    }
                }
            }
            string s = enc.GetString(data);
            return s.Length > 0 && s[0] == '\uFEFF' ? s.Substring(1) : s;
        }

        private sealed class UrlView : IUrl
        {
            private readonly Func<UrlState> state;
            private readonly MultiMapView query;
            public UrlView(Func<UrlState> state)
            {
                this.state = state;
                query = new MultiMapView(() => state().Query);
            }
            public string Host { get { return state().Host; } }
            public string Path { get { return state().Path; } }
            public int Port { get { return state().Port; } }
            public IReadOnlyDictionary<string, string[]> Query { get { return query; } }
            public string QueryString { get { return state().QueryString; } }
            public string Scheme { get { return state().Scheme; } }
            public override string ToString() { return state().ToString(); }
            public Uri ToUri() { return new Uri(state().ToString()); }
        }

        /// <summary>A read-only view of a live MultiMap (headers or query): values as string[].</summary>
        private sealed class MultiMapView : IReadOnlyDictionary<string, string[]>
        {
            private readonly Func<MultiMap> map;
            public MultiMapView(Func<MultiMap> map) { this.map = map; }
            private MultiMap M { get { return map() ?? MultiMap.Headers(); } }
            public string[] this[string key]
            {
                get
                {
                    var v = M.Get(key);
                    if (v == null) throw new KeyNotFoundException("'" + key + "' is not present");
                    return v.ToArray();
                }
            }
            public IEnumerable<string> Keys { get { return M.Names.ToList(); } }
            public IEnumerable<string[]> Values { get { return M.Entries.Select(e => e.Value.ToArray()).ToList(); } }
            public int Count { get { return M.Names.Count(); } }
            public bool ContainsKey(string key) { return M.Contains(key); }
            public bool TryGetValue(string key, out string[] value)
            {
                var v = M.Get(key);
                value = v == null ? null : v.ToArray();
                return v != null;
            }
            public IEnumerator<KeyValuePair<string, string[]>> GetEnumerator()
            {
                return M.Entries.Select(e => new KeyValuePair<string, string[]>(e.Key, e.Value.ToArray())).ToList().GetEnumerator();
            }
            IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
        }

        /// <summary>A read-only view of a live dictionary (variables, matched parameters).</summary>
        private sealed class LiveDictionary<TValue> : IReadOnlyDictionary<string, TValue>
        {
            private readonly Func<IDictionary<string, TValue>> dict;
            public LiveDictionary(Func<IDictionary<string, TValue>> dict) { this.dict = dict; }
            private IDictionary<string, TValue> D { get { return dict() ?? new Dictionary<string, TValue>(); } }
            public TValue this[string key]
            {
                get
                {
                    TValue v;
                    if (!D.TryGetValue(key, out v)) throw new KeyNotFoundException("'" + key + "' is not present");
                    return v;
                }
            }
            public IEnumerable<string> Keys { get { return D.Keys.ToList(); } }
            public IEnumerable<TValue> Values { get { return D.Values.ToList(); } }
            public int Count { get { return D.Count; } }
            public bool ContainsKey(string key) { return D.ContainsKey(key); }
            public bool TryGetValue(string key, out TValue value) { return D.TryGetValue(key, out value); }
            public IEnumerator<KeyValuePair<string, TValue>> GetEnumerator() { return D.ToList().GetEnumerator(); }
            IEnumerator IEnumerable.GetEnumerator() { return GetEnumerator(); }
        }
    }

    // ---- values expressions get from the extension methods ----

    public sealed class BasicAuthCredentials
    {
        public string UserId { get; private set; }
        public string Password { get; private set; }
        /// <summary>Alias of UserId (the policy toolkit's name).</summary>
        public string Username { get { return UserId; } }
        public BasicAuthCredentials(string userId, string password) { UserId = userId; Password = password; }
    }

    /// <summary>A parsed (not validated) JSON Web Token.</summary>
    public sealed class Jwt
    {
        public string Algorithm { get; private set; }
        public IEnumerable<string> Audiences { get; private set; }
        public IReadOnlyDictionary<string, string[]> Claims { get; private set; }
        public DateTime? ExpirationTime { get; private set; }
        public string Id { get; private set; }
        public string Issuer { get; private set; }
        public DateTime? IssuedAt { get; private set; }
        public DateTime? NotBefore { get; private set; }
        public string Subject { get; private set; }
        public string Type { get; private set; }

        // For validate-jwt (signature checks); not part of APIM's documented Jwt.
        /// <summary>The header's "kid", or null.</summary>
        public string KeyId { get; private set; }
        /// <summary>The token as given.</summary>
        public string Raw { get; private set; }
        public string HeaderSegment { get; private set; }
        public string PayloadSegment { get; private set; }
        public string SignatureSegment { get; private set; }
        /// <summary>ASCII bytes of HeaderSegment + "." + PayloadSegment: what the signature covers.</summary>
        public byte[] SigningInput { get; private set; }
        /// <summary>The decoded signature (empty for an unsigned token).</summary>
        public byte[] Signature { get; private set; }
        public JObject Header { get; private set; }
        public JObject Payload { get; private set; }

        private static readonly DateTime Epoch = new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc);

        /// <summary>Parses a compact JWS (three base64url segments). Does not check the signature.</summary>
        public static bool TryParse(string raw, out Jwt jwt)
        {
            jwt = null;
            if (string.IsNullOrWhiteSpace(raw)) return false;
            raw = raw.Trim();
            var parts = raw.Split('.');
            if (parts.Length != 3 || parts[0].Length == 0 || parts[1].Length == 0) return false;
            try
            {
                var header = ParseObject(Base64UrlDecode(parts[0]));
                var payload = ParseObject(Base64UrlDecode(parts[1]));
                if (header == null || payload == null) return false;
                var sig = Base64UrlDecode(parts[2]);
                var claims = new Dictionary<string, string[]>(StringComparer.Ordinal);
                foreach (var p in payload.Properties())
                {
                    var values = ClaimValues(p.Value);
                    if (values != null) claims[p.Name] = values;
                }
                string[] aud;
                claims.TryGetValue("aud", out aud);
                jwt = new Jwt
                {
                    Raw = raw,
                    HeaderSegment = parts[0],
                    PayloadSegment = parts[1],
                    SignatureSegment = parts[2],
                    SigningInput = Encoding.ASCII.GetBytes(parts[0] + "." + parts[1]),
                    Signature = sig,
                    Header = header,
                    Payload = payload,
                    Algorithm = StringOf(header["alg"]),
                    Type = StringOf(header["typ"]),
                    KeyId = StringOf(header["kid"]),
                    Claims = new System.Collections.ObjectModel.ReadOnlyDictionary<string, string[]>(claims),
                    Audiences = aud ?? new string[0],
                    Id = StringOf(payload["jti"]),
                    Issuer = StringOf(payload["iss"]),
                    Subject = StringOf(payload["sub"]),
                    ExpirationTime = TimeOf(payload["exp"]),
                    IssuedAt = TimeOf(payload["iat"]),
                    NotBefore = TimeOf(payload["nbf"]),
                };
                return true;
            }
            catch (FormatException) { return false; }
            catch (JsonException) { return false; }
            catch (ArgumentException) { return false; }
        }

        private static JObject ParseObject(byte[] utf8)
        {
            string json = new UTF8Encoding(false, true).GetString(utf8);
            using (var r = new JsonTextReader(new StringReader(json)) { DateParseHandling = DateParseHandling.None })
            {
                var t = JToken.ReadFrom(r) as JObject;
                if (t == null) return null;
                while (r.Read())
                    if (r.TokenType != JsonToken.Comment) return null; // trailing content
                return t;
            }
        }

        private static string StringOf(JToken t)
        {
            if (t == null || t.Type == JTokenType.Null) return null;
            var v = ClaimValues(t);
            return v == null || v.Length == 0 ? null : v[0];
        }

        private static string ScalarString(JToken t)
        {
            switch (t.Type)
            {
                case JTokenType.Null: return null;
                case JTokenType.String: return (string)t;
                case JTokenType.Boolean: return (bool)t ? "true" : "false";
                case JTokenType.Integer:
                case JTokenType.Float: return Convert.ToString(((JValue)t).Value, CultureInfo.InvariantCulture);
                default: return t.ToString(Formatting.None);
            }
        }

        private static string[] ClaimValues(JToken t)
        {
            if (t.Type == JTokenType.Null) return null;
            var arr = t as JArray;
            if (arr != null) return arr.Select(ScalarString).Where(x => x != null).ToArray();
            return new[] { ScalarString(t) };
        }

        private static DateTime? TimeOf(JToken t)
        {
            if (t == null || (t.Type != JTokenType.Integer && t.Type != JTokenType.Float)) return null;
            try { return Epoch.AddSeconds((double)t); }
            catch (ArgumentOutOfRangeException) { return null; }
        }

        public static byte[] Base64UrlDecode(string s)
        {
            if (s.IndexOfAny(new[] { '+', '/', '=' }) >= 0) throw new FormatException("not base64url");
            string b = s.Replace('-', '+').Replace('_', '/');
            switch (b.Length % 4)
            {
                case 0: break;
                case 2: b += "=="; break;
                case 3: b += "="; break;
                default: throw new FormatException("bad base64url length");
            }
            return Convert.FromBase64String(b);
        }

        public static string Base64UrlEncode(byte[] data)
        {
            return Convert.ToBase64String(data).TrimEnd('=').Replace('+', '-').Replace('/', '_');
        }
    }

    /// <summary>The extension methods APIM documents for policy expressions.</summary>
    public static class ContextExtensions
    {
        /// <summary>The values of a header (or query parameter, or claim) joined with ",", or defaultValue when absent.</summary>
        public static string GetValueOrDefault(this IReadOnlyDictionary<string, string[]> dictionary, string name, string defaultValue)
        {
            string[] v;
            if (dictionary == null || name == null || !dictionary.TryGetValue(name, out v) || v == null) return defaultValue;
            return string.Join(",", v);
        }

        public static string GetValueOrDefault(this IReadOnlyDictionary<string, string[]> dictionary, string name)
        {
            return GetValueOrDefault(dictionary, name, null);
        }

        /// <summary>A matched template parameter, or defaultValue when absent.</summary>
        public static string GetValueOrDefault(this IReadOnlyDictionary<string, string> dictionary, string name, string defaultValue)
        {
            string v;
            if (dictionary == null || name == null || !dictionary.TryGetValue(name, out v)) return defaultValue;
            return v;
        }

        public static string GetValueOrDefault(this IReadOnlyDictionary<string, string> dictionary, string name)
        {
            return GetValueOrDefault(dictionary, name, null);
        }

        /// <summary>
        /// A context variable cast to T, or defaultValue when it is not set. Throws InvalidCastException
        /// when the stored value is not a T (as APIM documents).
        /// </summary>
        public static T GetValueOrDefault<T>(this IReadOnlyDictionary<string, object> variables, string name, T defaultValue)
        {
            object v;
            if (variables == null || name == null || !variables.TryGetValue(name, out v)) return defaultValue;
            if (v == null)
            {
                if (default(T) == null) return default(T);
                throw new InvalidCastException("context variable '" + name + "' is null and cannot be read as " + typeof(T).Name);
            }
            if (v is T) return (T)v;
            throw new InvalidCastException("context variable '" + name + "' holds a " + v.GetType().Name + ", not a " + typeof(T).Name);
        }

        public static T GetValueOrDefault<T>(this IReadOnlyDictionary<string, object> variables, string name)
        {
            return GetValueOrDefault(variables, name, default(T));
        }

        /// <summary>Parses a JWT (no signature check); null when it is not one.</summary>
        public static Jwt AsJwt(this string input)
        {
            Jwt jwt;
            return Jwt.TryParse(input, out jwt) ? jwt : null;
        }

        public static bool TryParseJwt(this string input, out Jwt result)
        {
            return Jwt.TryParse(input, out result);
        }

        /// <summary>Parses an HTTP Basic Authorization value ("Basic base64(user:password)"); null when it is not one.</summary>
        public static BasicAuthCredentials AsBasic(this string input)
        {
            BasicAuthCredentials c;
            return TryParseBasic(input, out c) ? c : null;
        }

        public static bool TryParseBasic(this string input, out BasicAuthCredentials result)
        {
            result = null;
            if (string.IsNullOrWhiteSpace(input)) return false;
            string s = input.Trim();
            if (!s.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase)) return false;
            s = s.Substring(6).Trim();
            try
            {
                string decoded = new UTF8Encoding(false, true).GetString(Convert.FromBase64String(s));
                int colon = decoded.IndexOf(':');
                if (colon < 0) return false;
                result = new BasicAuthCredentials(decoded.Substring(0, colon), decoded.Substring(colon + 1));
                return true;
            }
            catch (FormatException) { return false; }
            catch (ArgumentException) { return false; }
        }

        /// <summary>Turns parsed form content back into "a=1&amp;b=2".</summary>
        public static string ToFormUrlEncodedContent(this IDictionary<string, IList<string>> content)
        {
            if (content == null) return null;
            var parts = new List<string>();
            foreach (var kv in content)
                foreach (var v in kv.Value ?? new List<string>())
                    parts.Add(FormEncode(kv.Key) + "=" + FormEncode(v ?? ""));
            return string.Join("&", parts);
        }

        /// <summary>Like ToFormUrlEncodedContent, with a leading "?" (empty string when there is nothing).</summary>
        public static string ToQueryString(this IDictionary<string, IList<string>> content)
        {
            string s = ToFormUrlEncodedContent(content);
            return string.IsNullOrEmpty(s) ? "" : "?" + s;
        }

        private static string FormEncode(string s)
        {
            return Uri.EscapeDataString(s).Replace("%20", "+");
        }

        public static byte[] Encrypt(this byte[] input, string alg, byte[] key, byte[] iv)
        {
            using (var a = CreateSymmetric(alg)) return Encrypt(input, a, key, iv);
        }

        public static byte[] Encrypt(this byte[] input, SymmetricAlgorithm alg)
        {
            using (var t = alg.CreateEncryptor()) return t.TransformFinalBlock(input, 0, input.Length);
        }

        public static byte[] Encrypt(this byte[] input, SymmetricAlgorithm alg, byte[] key, byte[] iv)
        {
            using (var t = alg.CreateEncryptor(key, iv)) return t.TransformFinalBlock(input, 0, input.Length);
        }

        public static byte[] Decrypt(this byte[] input, string alg, byte[] key, byte[] iv)
        {
            using (var a = CreateSymmetric(alg)) return Decrypt(input, a, key, iv);
        }

        public static byte[] Decrypt(this byte[] input, SymmetricAlgorithm alg)
        {
            using (var t = alg.CreateDecryptor()) return t.TransformFinalBlock(input, 0, input.Length);
        }

        public static byte[] Decrypt(this byte[] input, SymmetricAlgorithm alg, byte[] key, byte[] iv)
        {
            using (var t = alg.CreateDecryptor(key, iv)) return t.TransformFinalBlock(input, 0, input.Length);
        }

        private static SymmetricAlgorithm CreateSymmetric(string alg)
        {
            var a = SymmetricAlgorithm.Create(alg);
            if (a == null) throw new ArgumentException("unknown symmetric algorithm \"" + alg + "\"");
            return a;
        }

        /// <summary>X.509 chain validation without revocation checks.</summary>
        public static bool VerifyNoRevocation(this X509Certificate2 input)
        {
            using (var chain = new X509Chain())
            {
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(input);
            }
        }
    }
}
