// Per-request state and the API that policy implementations use.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Text;

namespace Gateway
{
    /// <summary>Ordered multi-valued map: HTTP headers (case-insensitive) or query parameters.</summary>
    public sealed class MultiMap
    {
        private readonly List<KeyValuePair<string, List<string>>> entries = new List<KeyValuePair<string, List<string>>>();
        public readonly StringComparer Comparer;
        public MultiMap(StringComparer comparer) { Comparer = comparer; }
        public static MultiMap Headers() { return new MultiMap(StringComparer.OrdinalIgnoreCase); }
        public static MultiMap Query() { return new MultiMap(StringComparer.Ordinal); }

        private int IndexOf(string name)
        {
            for (int i = 0; i < entries.Count; i++) if (Comparer.Equals(entries[i].Key, name)) return i;
            return -1;
        }
        public bool Contains(string name) { return IndexOf(name) >= 0; }
        /// <summary>Values of name, or null when absent.</summary>
        public List<string> Get(string name) { int i = IndexOf(name); return i < 0 ? null : entries[i].Value; }
        /// <summary>All values joined with "," (how APIM's GetValueOrDefault reads a header), or null.</summary>
        public string Joined(string name) { var v = Get(name); return v == null ? null : string.Join(",", v); }
        public void Set(string name, IEnumerable<string> values)
        {
            int i = IndexOf(name);
            var list = values.ToList();
            if (i < 0) entries.Add(new KeyValuePair<string, List<string>>(name, list));
            else entries[i] = new KeyValuePair<string, List<string>>(entries[i].Key, list);
        }
        public void Set(string name, string value) { Set(name, new[] { value }); }
        public void Add(string name, string value)
        {
            int i = IndexOf(name);
            if (i < 0) entries.Add(new KeyValuePair<string, List<string>>(name, new List<string> { value }));
            else entries[i].Value.Add(value);
        }
        public bool Remove(string name) { int i = IndexOf(name); if (i < 0) return false; entries.RemoveAt(i); return true; }
        public IEnumerable<string> Names { get { return entries.Select(e => e.Key); } }
        public IEnumerable<KeyValuePair<string, List<string>>> Entries { get { return entries; } }
        public MultiMap Clone()
        {
            var m = new MultiMap(Comparer);
            foreach (var e in entries) m.entries.Add(new KeyValuePair<string, List<string>>(e.Key, new List<string>(e.Value)));
            return m;
        }
    }

    /// <summary>A URL as policies see and change it.</summary>
    public sealed class UrlState
    {
        public string Scheme = "http";
        public string Host = "localhost";
        public int Port = 80;
        /// <summary>Path with a leading "/", percent-encoding preserved.</summary>
        public string Path = "/";
        public MultiMap Query = MultiMap.Query();

        public static UrlState Parse(string absolute)
        {
            var u = new Uri(absolute);
            var s = new UrlState { Scheme = u.Scheme, Host = u.Host, Port = u.Port, Path = u.AbsolutePath };
            s.Query = ParseQuery(u.Query);
            return s;
        }

        public static MultiMap ParseQuery(string q)
        {
            var m = MultiMap.Query();
            if (string.IsNullOrEmpty(q)) return m;
            if (q.StartsWith("?")) q = q.Substring(1);
            foreach (var part in q.Split('&'))
            {
                if (part.Length == 0) continue;
                int eq = part.IndexOf('=');
                string k = Uri.UnescapeDataString((eq < 0 ? part : part.Substring(0, eq)).Replace('+', ' '));
                string v = eq < 0 ? "" : Uri.UnescapeDataString(part.Substring(eq + 1).Replace('+', ' '));
                m.Add(k, v);
            }
            return m;
        }

        public string QueryString
        {
            get
            {
                var parts = new List<string>();
                foreach (var e in Query.Entries)
                    foreach (var v in e.Value) parts.Add(Uri.EscapeDataString(e.Key) + "=" + Uri.EscapeDataString(v));
                return parts.Count == 0 ? "" : "?" + string.Join("&", parts);
            }
        }

        public bool DefaultPort { get { return (Scheme == "http" && Port == 80) || (Scheme == "https" && Port == 443); } }
        public override string ToString()
        {
            return Scheme + "://" + Host + (DefaultPort ? "" : ":" + Port) + Path + QueryString;
        }
        public UrlState Clone()
        {
            return new UrlState { Scheme = Scheme, Host = Host, Port = Port, Path = Path, Query = Query.Clone() };
        }
    }

    /// <summary>The request as it flows through inbound and on to the backend.</summary>
    public sealed class RequestState
    {
        public string Method = "GET";
        public UrlState Url = new UrlState();
        /// <summary>The URL the client sent, never changed by policies.</summary>
        public UrlState OriginalUrl = new UrlState();
        public MultiMap Headers = MultiMap.Headers();
        /// <summary>The buffered body (requests are read whole, within the gateway's size limit); empty when none.</summary>
        public byte[] Body = new byte[0];
        public string ClientIp = "127.0.0.1";
        /// <summary>Template parameters matched from the operation's URL template.</summary>
        public Dictionary<string, string> MatchedParameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
    }

    /// <summary>The response, from a backend, send-request or return-response.</summary>
    public sealed class ResponseState
    {
        public int StatusCode = 200;
        public string StatusReason = "OK";
        public MultiMap Headers = MultiMap.Headers();
        /// <summary>Buffered body; null while BodyStream holds an unread streamed body.</summary>
        public byte[] Body = new byte[0];
        /// <summary>An unbuffered backend body (forward-request buffer-response="false"), copied to the client as it arrives.</summary>
        public Stream BodyStream;

        /// <summary>Reads a streamed body into Body (a policy wants to read it).</summary>
        public byte[] BufferBody()
        {
            if (BodyStream != null)
            {
                using (var ms = new MemoryStream()) { BodyStream.CopyTo(ms); Body = ms.ToArray(); }
                BodyStream.Dispose();
                BodyStream = null;
            }
            return Body ?? new byte[0];
        }
    }

    /// <summary>context.LastError.</summary>
    public sealed class LastErrorInfo
    {
        public string Source, Reason, Message, Scope, Section, Path, PolicyId;
    }

    /// <summary>A policy element's implementation. Implementations are stateless; state lives in Exec and Services.</summary>
    public interface IPolicy
    {
        void Execute(PolicyNode node, Exec exec);
    }

    /// <summary>
    /// One request's execution: its state, the expression context, and helpers
    /// that evaluate attribute values and run nested policies.
    /// </summary>
    public sealed class Exec
    {
        public readonly Services Services;
        public RequestState Request = new RequestState();
        public ResponseState Response = new ResponseState();
        public readonly Dictionary<string, object> Variables = new Dictionary<string, object>(StringComparer.Ordinal);
        public LastErrorInfo LastError;
        public readonly Guid RequestId = Guid.NewGuid();
        public readonly DateTime Timestamp = DateTime.UtcNow;
        private readonly Stopwatch clock = Stopwatch.StartNew();
        public TimeSpan Elapsed { get { return clock.Elapsed; } }
        public ApiDef Api;
        public OperationDef Operation;
        /// <summary>Where forward-request sends the request; starts as the API's service URL.</summary>
        public string BackendUrl;
        /// <summary>Set by return-response (and by policies that answer directly): the pipeline ends; nothing after it runs, not even outbound (see Pipeline.cs).</summary>
        public bool Ended;
        /// <summary>The section being executed.</summary>
        public string Section;
        /// <summary>True once forward-request has run (so the pipeline does not forward again).</summary>
        public bool Forwarded;
        private IContextSurface context;
        /// <summary>The pipeline's bookkeeping of this request; use ExecState.Of(exec).</summary>
        internal ExecState PipelineState;

        public Exec(Services services) { Services = services; }

        /// <summary>The object expressions see as "context".</summary>
        public IContextSurface Context
        {
            get { return context ?? (context = Services.ContextFactory(this)); }
        }

        /// <summary>Runs policies in order until one ends the pipeline.</summary>
        public void Run(IEnumerable<PolicyNode> policies)
        {
            foreach (var node in policies)
            {
                if (Ended) return;
                IPolicy impl;
                if (!Services.Policies.TryGetValue(node.Name, out impl))
                    throw new PolicyException(node.Name, "PolicyNotImplemented",
                        "the local gateway does not implement <" + node.Name + ">", node.Where);
                impl.Execute(node, this);
            }
        }

        /// <summary>Evaluates a value: a literal as is, an expression through its compiled method.</summary>
        public object Eval(Value v)
        {
            if (v == null) return null;
            if (!v.IsExpression) return v.Literal;
            if (v.Expr.Compiled == null)
                throw new InvalidOperationException("expression at " + v.Where + " was not compiled");
            try
            {
                return v.Expr.Compiled(Context);
            }
            catch (PolicyException) { throw; }
            catch (Exception e)
            {
                throw new PolicyException("expression", "ExpressionValueEvaluationFailure",
                    "Expression evaluation failed. " + e.Message, v.Where, e);
            }
        }

        public string EvalString(Value v, string dflt = null)
        {
            if (v == null) return dflt;
            var o = Eval(v);
            if (o == null) return dflt;
            if (o is bool) return (bool)o ? "true" : "false";
            return Convert.ToString(o, System.Globalization.CultureInfo.InvariantCulture);
        }

        public bool EvalBool(Value v, bool dflt = false)
        {
            if (v == null) return dflt;
            var o = Eval(v);
            if (o is bool) return (bool)o;
            var s = o as string;
            bool b;
            if (s != null && bool.TryParse(s.Trim(), out b)) return b;
            throw new PolicyException("configuration", "InvalidValue", "expected true or false, got \"" + o + "\"", v.Where);
        }

        public int EvalInt(Value v, int dflt = 0)
        {
            if (v == null) return dflt;
            var o = Eval(v);
            try { return Convert.ToInt32(o, System.Globalization.CultureInfo.InvariantCulture); }
            catch (Exception) { throw new PolicyException("configuration", "InvalidValue", "expected an integer, got \"" + o + "\"", v.Where); }
        }

        /// <summary>Attribute value helpers: the attribute's evaluated value or the default when absent.</summary>
        public string AttrString(PolicyNode n, string name, string dflt = null) { var a = n.Attribute(name); return a == null ? dflt : EvalString(a.Value, dflt); }
        public bool AttrBool(PolicyNode n, string name, bool dflt = false) { var a = n.Attribute(name); return a == null ? dflt : EvalBool(a.Value, dflt); }
        public int AttrInt(PolicyNode n, string name, int dflt = 0) { var a = n.Attribute(name); return a == null ? dflt : EvalInt(a.Value, dflt); }
    }

    /// <summary>Time source, replaceable in tests of expiry.</summary>
    public interface IClock { DateTime UtcNow { get; } }
    public sealed class SystemClock : IClock { public DateTime UtcNow { get { return DateTime.UtcNow; } } }

    /// <summary>Gateway-wide services shared by every request.</summary>
    public sealed class Services
    {
        public Bundle Bundle;
        public readonly Dictionary<string, IPolicy> Policies = new Dictionary<string, IPolicy>(StringComparer.Ordinal);
        public Func<Exec, IContextSurface> ContextFactory;
        public IClock Clock = new SystemClock();
        /// <summary>The internal cache of cache-store-value / cache-lookup-value (APIM's built-in cache).</summary>
        public readonly ValueCache Cache;
        public readonly RateLimiter RateLimits;
        /// <summary>validate-jwt openid-config: OpenID metadata and JWKS per metadata URL (see ValidateJwt.cs).</summary>
        public readonly OpenIdConfigCache OpenIdConfigs;
        /// <summary>validate-jwt issuer-signing-keys: parsed RSA keys per (n, e) (see ValidateJwt.cs).</summary>
        public readonly RsaKeyCache RsaKeys;
        /// <summary>authentication-managed-identity: the signing key, its JWKS and the cached tokens (see ManagedIdentity.cs).</summary>
        public readonly ManagedIdentity ManagedIdentity;
        /// <summary>send-request: the ResponseState behind each response surface stored in a variable (see PolicySet.cs).</summary>
        public readonly ResponseRegistry Responses = new ResponseRegistry();
        public Action<string> Log = s => Console.Error.WriteLine(s);

        public Services()
        {
            Cache = new ValueCache(this);
            RateLimits = new RateLimiter(this);
            OpenIdConfigs = new OpenIdConfigCache(this);
            RsaKeys = new RsaKeyCache();
            ManagedIdentity = new ManagedIdentity(this);
        }
    }

    /// <summary>A key-value cache with per-entry expiry, as APIM's internal cache.</summary>
    public sealed class ValueCache
    {
        private readonly Services services;
        private readonly Dictionary<string, KeyValuePair<object, DateTime>> items = new Dictionary<string, KeyValuePair<object, DateTime>>(StringComparer.Ordinal);
        public ValueCache(Services s) { services = s; }
        public void Store(string key, object value, TimeSpan ttl)
        {
            lock (items) items[key] = new KeyValuePair<object, DateTime>(value, services.Clock.UtcNow + ttl);
        }
        public bool TryGet(string key, out object value)
        {
            lock (items)
            {
                KeyValuePair<object, DateTime> e;
                if (items.TryGetValue(key, out e) && e.Value > services.Clock.UtcNow) { value = e.Key; return true; }
                items.Remove(key);
                value = null;
                return false;
            }
        }
        public void Remove(string key) { lock (items) items.Remove(key); }
    }

    /// <summary>Fixed-window call counters for rate-limit-by-key.</summary>
    public sealed class RateLimiter
    {
        private readonly Services services;
        private readonly Dictionary<string, KeyValuePair<int, DateTime>> windows = new Dictionary<string, KeyValuePair<int, DateTime>>(StringComparer.Ordinal);
        public RateLimiter(Services s) { services = s; }
        /// <summary>Counts a call; returns false (and the seconds until the window resets) when over the limit.</summary>
        public bool TryAcquire(string key, int calls, TimeSpan period, out int retryAfterSeconds)
        {
            lock (windows)
            {
                var now = services.Clock.UtcNow;
                KeyValuePair<int, DateTime> w;
                if (!windows.TryGetValue(key, out w) || w.Value <= now) w = new KeyValuePair<int, DateTime>(0, now + period);
                retryAfterSeconds = Math.Max(1, (int)Math.Ceiling((w.Value - now).TotalSeconds));
                if (w.Key >= calls) { windows[key] = w; return false; }
                windows[key] = new KeyValuePair<int, DateTime>(w.Key + 1, w.Value);
                return true;
            }
        }

        /// <summary>
        /// rate-limit-by-key: admits a call when the window's count plus increment stays within calls,
        /// counting it when count is true (false: check only, the caller adds later with Add).
        /// remaining: calls left in the window after this one; retryAfterSeconds: until the window resets.
        /// </summary>
        public bool TryAcquire(string key, int calls, TimeSpan period, int increment, bool count, out int retryAfterSeconds, out int remaining)
        {
            lock (windows)
            {
                var now = services.Clock.UtcNow;
                KeyValuePair<int, DateTime> w;
                if (!windows.TryGetValue(key, out w) || w.Value <= now) w = new KeyValuePair<int, DateTime>(0, now + period);
                retryAfterSeconds = Math.Max(1, (int)Math.Ceiling((w.Value - now).TotalSeconds));
                if (w.Key + increment > calls) { windows[key] = w; remaining = Math.Max(0, calls - w.Key); return false; }
                windows[key] = count ? new KeyValuePair<int, DateTime>(w.Key + increment, w.Value) : w;
                remaining = Math.Max(0, calls - w.Key - increment);
                return true;
            }
        }

        /// <summary>Adds increment to key's current window (rate-limit-by-key increment-condition, once the response is known).</summary>
        public void Add(string key, TimeSpan period, int increment)
        {
            lock (windows)
            {
                var now = services.Clock.UtcNow;
                KeyValuePair<int, DateTime> w;
                if (!windows.TryGetValue(key, out w) || w.Value <= now) w = new KeyValuePair<int, DateTime>(0, now + period);
                windows[key] = new KeyValuePair<int, DateTime>(w.Key + increment, w.Value);
            }
        }
    }
}
