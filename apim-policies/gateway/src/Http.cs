// HTTP plumbing shared by the server and the policies: routing by the manifest,
// JSON answers, and the backend client of forward-request and send-request.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    public static class Http
    {
        public static readonly Encoding Utf8 = new UTF8Encoding(false);

        /// <summary>Hop-by-hop headers (RFC 7230 6.1) and others the gateway computes itself.</summary>
        public static readonly HashSet<string> HopByHop = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
        {
            "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
            "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length",
        };

        /// <summary>Headers whose values may contain commas: written as separate header lines (set-header-policy.md).</summary>
        public static readonly HashSet<string> SeparateLines = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
        {
            "User-Agent", "WWW-Authenticate", "Proxy-Authenticate", "Cookie", "Set-Cookie", "Warning", "Date",
            "Expires", "If-Modified-Since", "If-Unmodified-Since", "Last-Modified", "Retry-After",
        };

        private static readonly MethodInfo baseGet = typeof(System.Collections.Specialized.NameObjectCollectionBase)
            .GetMethod("BaseGet", BindingFlags.Instance | BindingFlags.NonPublic, null, new[] { typeof(string) }, null);

        /// <summary>
        /// A header's values one per header line, as received. WebHeaderCollection.GetValues splits at
        /// commas (breaking "Expires=Wed, 09 Jun ..." in a Set-Cookie) and Get joins lines with ",".
        /// </summary>
        public static string[] RawValues(System.Collections.Specialized.NameValueCollection h, string name)
        {
            try
            {
                var list = baseGet != null ? baseGet.Invoke(h, new object[] { name }) as System.Collections.IList : null;
                if (list != null) return list.Cast<object>().Select(o => o == null ? "" : o.ToString()).ToArray();
            }
            catch (Exception) { }
            var joined = h.Get(name);
            return joined == null ? new string[0] : new[] { joined };
        }

        public static ResponseState JsonResponse(int status, JToken body)
        {
            var r = new ResponseState { StatusCode = status, StatusReason = Reason(status) };
            r.Headers.Set("Content-Type", "application/json; charset=utf-8");
            r.Body = Utf8.GetBytes(body.ToString(Formatting.None));
            return r;
        }

        /// <summary>{"statusCode": N, "message": "..."}: the shape of APIM's own error answers.</summary>
        public static ResponseState StatusMessage(int status, string message)
        {
            return JsonResponse(status, new JObject { ["statusCode"] = status, ["message"] = message });
        }

        public static string Reason(int status)
        {
            switch (status)
            {
                case 200: return "OK";
                case 201: return "Created";
                case 202: return "Accepted";
                case 204: return "No Content";
                case 301: return "Moved Permanently";
                case 302: return "Found";
                case 303: return "See Other";
                case 304: return "Not Modified";
                case 307: return "Temporary Redirect";
                case 308: return "Permanent Redirect";
                case 400: return "Bad Request";
                case 401: return "Unauthorized";
                case 403: return "Forbidden";
                case 404: return "Not Found";
                case 405: return "Method Not Allowed";
                case 409: return "Conflict";
                case 413: return "Payload Too Large";
                case 415: return "Unsupported Media Type";
                case 429: return "Too Many Requests";
                case 500: return "Internal Server Error";
                case 502: return "Bad Gateway";
                case 503: return "Service Unavailable";
                case 504: return "Gateway Timeout";
                default: return "";
            }
        }

        public static byte[] ToBytes(object body)
        {
            if (body == null) return new byte[0];
            var b = body as byte[];
            if (b != null) return b;
            var s = body as string;
            if (s != null) return Utf8.GetBytes(s);
            var t = body as JToken;
            if (t != null) return Utf8.GetBytes(t.ToString(Formatting.None));
            return Utf8.GetBytes(Convert.ToString(body, System.Globalization.CultureInfo.InvariantCulture));
        }

        /// <summary>Percent-encodes a value for a URL path, keeping "/" (a wildcard parameter may span segments).</summary>
        public static string EscapePath(string v)
        {
            return string.Join("/", (v ?? "").Split('/').Select(Uri.EscapeDataString));
        }
    }

    /// <summary>Maps a request path to an API (longest path prefix at a segment boundary) and an operation (method + URL template).</summary>
    public sealed class Router
    {
        private sealed class Route
        {
            public ApiDef Api;
            public OperationDef Op;
            public Regex Pattern;
            public List<string> Names;
            public int Literal, Wildcards;
        }

        private readonly Bundle bundle;
        private readonly Dictionary<OperationDef, Route> routes = new Dictionary<OperationDef, Route>();

        public Router(Bundle bundle)
        {
            this.bundle = bundle;
            foreach (var api in bundle.Apis)
                foreach (var op in api.Operations) routes[op] = Compile(api, op);
        }

        public ApiDef FindApi(string path)
        {
            ApiDef best = null;
            int bestLen = -1;
            foreach (var api in bundle.Apis)
            {
                var prefix = "/" + (api.Path ?? "").Trim('/');
                bool match = prefix == "/" ||
                             (path.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) &&
                              (path.Length == prefix.Length || path[prefix.Length] == '/'));
                int len = prefix == "/" ? 0 : prefix.Length;
                if (match && len > bestLen) { best = api; bestLen = len; }
            }
            return best;
        }

        /// <summary>The request path relative to the API path ("/" when nothing is left).</summary>
        public static string OperationPath(ApiDef api, string path)
        {
            var prefix = "/" + (api.Path ?? "").Trim('/');
            var rest = prefix == "/" ? path : path.Substring(Math.Min(prefix.Length, path.Length));
            return rest.Length == 0 ? "/" : rest;
        }

        /// <summary>Finds the operation for method and path; method null matches any method.</summary>
        public OperationDef FindOperation(ApiDef api, string method, string opPath, Dictionary<string, string> parameters)
        {
            Route best = null;
            Match bestMatch = null;
            foreach (var op in api.Operations)
            {
                var m = op.Method ?? "*";
                if (method != null && m != "*" && !string.Equals(m, method, StringComparison.OrdinalIgnoreCase)) continue;
                var r = routes[op];
                var match = r.Pattern.Match(opPath);
                if (!match.Success) continue;
                if (best == null || Better(r, best, method)) { best = r; bestMatch = match; }
            }
            if (best == null) return null;
            if (parameters != null)
                for (int i = 0; i < best.Names.Count; i++)
                {
                    var g = bestMatch.Groups["p" + i];
                    if (g.Success) parameters[best.Names[i]] = Uri.UnescapeDataString(g.Value);
                }
            return best.Op;
        }

        public bool HasExplicitMethod(ApiDef api, string method, string opPath)
        {
            return api.Operations.Any(op => string.Equals(op.Method, method, StringComparison.OrdinalIgnoreCase) && routes[op].Pattern.IsMatch(opPath));
        }

        private static bool Better(Route a, Route b, string method)
        {
            if (a.Wildcards != b.Wildcards) return a.Wildcards < b.Wildcards;
            if (a.Literal != b.Literal) return a.Literal > b.Literal;
            bool aExact = a.Op.Method != "*", bExact = b.Op.Method != "*";
            return aExact && !bExact;
        }

        private static Route Compile(ApiDef api, OperationDef op)
        {
            var t = op.UrlTemplate ?? "/";
            int q = t.IndexOf('?');
            if (q >= 0) t = t.Substring(0, q);
            var segs = t.Split(new[] { '/' }, StringSplitOptions.RemoveEmptyEntries);
            var names = new List<string>();
            var sb = new StringBuilder("^");
            int literal = 0, wild = 0;
            for (int i = 0; i < segs.Length; i++)
            {
                var s = segs[i];
                bool last = i == segs.Length - 1;
                if (last && s == "*") { sb.Append("(?:/.*)?"); wild++; continue; }
                var star = Regex.Match(s, @"^\{\*([^}]+)\}$");
                if (last && star.Success)
                {
                    sb.Append("(?:/(?<p" + names.Count + ">.*))?");
                    names.Add(star.Groups[1].Value);
                    wild++;
                    continue;
                }
                sb.Append('/');
                int pos = 0;
                foreach (Match m in Regex.Matches(s, @"\{([^}]+)\}"))
                {
                    var lit = s.Substring(pos, m.Index - pos);
                    sb.Append(Regex.Escape(lit));
                    literal += lit.Length;
                    sb.Append("(?<p" + names.Count + ">[^/]+)");
                    names.Add(m.Groups[1].Value);
                    pos = m.Index + m.Length;
                }
                var tail = s.Substring(pos);
                sb.Append(Regex.Escape(tail));
                literal += tail.Length;
            }
            sb.Append("/?$");
            return new Route
            {
                Api = api, Op = op, Names = names, Literal = literal, Wildcards = wild,
                Pattern = new Regex(sb.ToString(), RegexOptions.IgnoreCase | RegexOptions.CultureInvariant),
            };
        }
    }

    /// <summary>A request to a backend (forward-request) or to any URL (send-request).</summary>
    public sealed class BackendRequest
    {
        public string Method = "GET";
        public string Url;
        public MultiMap Headers = MultiMap.Headers();
        public byte[] Body = new byte[0];
        public int TimeoutMs = 300000;
        public bool FollowRedirects;
        /// <summary>False: the response body is left as a stream (forward-request buffer-response="false").</summary>
        public bool Buffer = true;
    }

    /// <summary>The backend could not be reached or did not answer in time. Reason is BackendConnectionFailure or Timeout.</summary>
    public sealed class BackendException : Exception
    {
        public readonly string Reason;
        public BackendException(string reason, string message, Exception inner = null) : base(message, inner) { Reason = reason; }
    }

    public static class BackendClient
    {
        private static readonly MethodInfo addWithoutValidate =
            typeof(WebHeaderCollection).GetMethod("AddWithoutValidate", BindingFlags.Instance | BindingFlags.NonPublic, null, new[] { typeof(string), typeof(string) }, null);

        /// <summary>Headers HttpWebRequest manages itself.</summary>
        private static readonly HashSet<string> Managed = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
        {
            "Host", "Expect", "Content-Length",
        };

        private static readonly Regex CookieSplit = new Regex(@",(?=\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+=)");

        public static ResponseState Send(BackendRequest r)
        {
            Uri uri;
            if (!Uri.TryCreate(r.Url, UriKind.Absolute, out uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
                throw new BackendException("BackendConnectionFailure", "invalid backend URL \"" + r.Url + "\"");
            var req = (HttpWebRequest)WebRequest.Create(uri);
            req.Method = r.Method;
            req.Proxy = null;
            req.AllowAutoRedirect = r.FollowRedirects;
            req.AllowReadStreamBuffering = false;
            req.AutomaticDecompression = DecompressionMethods.None;
            req.KeepAlive = true;
            req.Timeout = Math.Max(1, r.TimeoutMs);
            req.ReadWriteTimeout = r.Buffer ? Math.Max(1, r.TimeoutMs) : Timeout.Infinite;
            foreach (var e in r.Headers.Entries)
            {
                if (Http.HopByHop.Contains(e.Key) || Managed.Contains(e.Key)) continue;
                SetHeader(req, e.Key, e.Value);
            }
            var body = r.Body ?? new byte[0];
            bool sendBody = body.Length > 0 || r.Method == "POST" || r.Method == "PUT" || r.Method == "PATCH";
            var started = DateTime.UtcNow;
            HttpWebResponse resp;
            try
            {
                if (sendBody)
                {
                    req.AllowWriteStreamBuffering = false;
                    req.ContentLength = body.Length;
                    using (var s = req.GetRequestStream()) s.Write(body, 0, body.Length);
                }
                try { resp = (HttpWebResponse)req.GetResponse(); }
                catch (WebException we)
                {
                    if (we.Status == WebExceptionStatus.ProtocolError && we.Response != null) resp = (HttpWebResponse)we.Response;
                    else throw;
                }
            }
            catch (WebException we)
            {
                req.Abort();
                throw Failure(we, r, started);
            }
            catch (Exception e) when (e is IOException || e is InvalidOperationException)
            {
                // IOException: the connection broke; ProtocolViolationException (an InvalidOperationException),
                // e.g. a body on a GET, which HttpWebRequest refuses to send.
                req.Abort();
                throw new BackendException("BackendConnectionFailure", "backend " + uri.Host + ":" + uri.Port + " failed: " + e.Message, e);
            }

            var result = new ResponseState { StatusCode = (int)resp.StatusCode, StatusReason = resp.StatusDescription };
            foreach (var name in resp.Headers.AllKeys)
            {
                if (Http.HopByHop.Contains(name)) continue;
                foreach (var v in Http.RawValues(resp.Headers, name))
                {
                    // Mono joins repeated Set-Cookie lines with ","; split where a new cookie starts.
                    if (string.Equals(name, "Set-Cookie", StringComparison.OrdinalIgnoreCase))
                        foreach (var c in CookieSplit.Split(v)) result.Headers.Add(name, c.Trim());
                    else result.Headers.Add(name, v);
                }
            }
            if (r.Method == "HEAD" && resp.Headers["Content-Length"] != null)
            {
                // HEAD: keep the length the backend announced (the body itself is empty).
                result.Headers.Set("Content-Length", resp.Headers["Content-Length"]);
            }
            Stream stream;
            try { stream = resp.GetResponseStream(); }
            catch (Exception)
            {
                resp.Close();
                result.Body = new byte[0];
                return result;
            }
            if (!r.Buffer && r.Method != "HEAD")
            {
                result.Body = null;
                result.BodyStream = new BackendStream(req, resp, stream);
                return result;
            }
            try
            {
                using (var ms = new MemoryStream())
                {
                    stream.CopyTo(ms);
                    result.Body = ms.ToArray();
                }
            }
            catch (Exception e)
            {
                req.Abort();
                var we = e as WebException;
                if (we != null) throw Failure(we, r, started);
                var timedOut = (DateTime.UtcNow - started).TotalMilliseconds >= r.TimeoutMs - 50;
                throw new BackendException(timedOut ? "Timeout" : "BackendConnectionFailure",
                    "reading the response of " + uri.Host + ":" + uri.Port + " failed: " + e.Message, e);
            }
            finally { resp.Close(); }
            return result;
        }

        private static BackendException Failure(WebException we, BackendRequest r, DateTime started)
        {
            var uri = new Uri(r.Url);
            var where = uri.Host + ":" + uri.Port;
            if (we.Status == WebExceptionStatus.Timeout)
                return new BackendException("Timeout", "backend " + where + " did not answer within " + r.TimeoutMs + " ms", we);
            return new BackendException("BackendConnectionFailure", "backend " + where + " failed: " + we.Message, we);
        }

        private static void SetHeader(HttpWebRequest req, string name, List<string> values)
        {
            var joined = string.Join(",", values);
            switch (name.ToLowerInvariant())
            {
                case "accept": req.Accept = joined; return;
                case "content-type": req.ContentType = joined; return;
                case "user-agent": req.UserAgent = joined; return;
                case "referer": req.Referer = joined; return;
                case "date":
                case "if-modified-since":
                case "range":
                    addWithoutValidate.Invoke(req.Headers, new object[] { name, joined });
                    return;
            }
            try
            {
                if (Http.SeparateLines.Contains(name)) foreach (var v in values) req.Headers.Add(name, v);
                else req.Headers.Add(name, joined);
            }
            catch (ArgumentException)
            {
                addWithoutValidate.Invoke(req.Headers, new object[] { name, joined });
            }
        }
    }

    /// <summary>An unbuffered backend body. Disposing it before the end aborts the backend connection.</summary>
    public sealed class BackendStream : Stream
    {
        private readonly HttpWebRequest request;
        private readonly HttpWebResponse response;
        private readonly Stream inner;
        private volatile bool eof;
        private int closed;

        public BackendStream(HttpWebRequest request, HttpWebResponse response, Stream inner)
        {
            this.request = request; this.response = response; this.inner = inner;
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (closed != 0) return 0;
            int n = inner.Read(buffer, offset, count);
            if (n == 0) eof = true;
            return n;
        }

        /// <summary>Stops the backend transfer (client gone, shutdown); a blocked Read returns or throws.</summary>
        public void Abort()
        {
            try { request.Abort(); } catch (Exception) { }
        }

        protected override void Dispose(bool disposing)
        {
            if (Interlocked.Exchange(ref closed, 1) == 1) return;
            if (!eof) Abort();
            try { inner.Dispose(); } catch (Exception) { }
            try { response.Close(); } catch (Exception) { }
            base.Dispose(disposing);
        }

        public override bool CanRead { get { return true; } }
        public override bool CanSeek { get { return false; } }
        public override bool CanWrite { get { return false; } }
        public override long Length { get { throw new NotSupportedException(); } }
        public override long Position { get { throw new NotSupportedException(); } set { throw new NotSupportedException(); } }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) { throw new NotSupportedException(); }
        public override void SetLength(long value) { throw new NotSupportedException(); }
        public override void Write(byte[] buffer, int offset, int count) { throw new NotSupportedException(); }
    }
}
