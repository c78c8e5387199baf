// The HTTP front of the local gateway: HttpListener, one thread per request, routing by the
// manifest, the pipeline, and the answer (buffered, or streamed chunk by chunk for
// forward-request buffer-response="false").
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Reflection;
using System.Threading;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>
    /// Bundle problems grouped by the policy files a request's effective pipeline touches: the
    /// global, API and operation policy files the manifest names, and the fragment files those
    /// include. Files are known from the manifest (Bundle.GlobalFile, ApiDef.PolicyFile,
    /// OperationDef.PolicyFile, Bundle.FragmentFiles), so a file that failed to parse still
    /// affects only the requests whose pipeline references it.
    /// </summary>
    public sealed class ProblemIndex
    {
        private readonly Bundle bundle;
        private readonly Dictionary<string, List<Problem>> byFile = new Dictionary<string, List<Problem>>(StringComparer.Ordinal);
        /// <summary>Problems outside any policy file (manifest, named values): they affect every request.</summary>
        private readonly List<Problem> general = new List<Problem>();
        private readonly ConcurrentDictionary<OperationDef, List<Problem>> cache = new ConcurrentDictionary<OperationDef, List<Problem>>();

        public ProblemIndex(Bundle bundle, IEnumerable<Problem> problems)
        {
            this.bundle = bundle;
            var policyFiles = new HashSet<string>(ReferencedFiles(bundle).Select(Norm), StringComparer.Ordinal);
            foreach (var p in problems)
            {
                var f = p.Where != null && p.Where.File != null ? Norm(p.Where.File) : null;
                if (f != null && policyFiles.Contains(f))
                {
                    List<Problem> l;
                    if (!byFile.TryGetValue(f, out l)) byFile[f] = l = new List<Problem>();
                    l.Add(p);
                }
                else general.Add(p);
            }
        }

        /// <summary>Every policy file the manifest names, whether or not it could be parsed.</summary>
        private static IEnumerable<string> ReferencedFiles(Bundle b)
        {
            if (b == null) yield break;
            if (b.GlobalFile != null) yield return b.GlobalFile;
            foreach (var api in b.Apis)
            {
                if (api.PolicyFile != null) yield return api.PolicyFile;
                foreach (var op in api.Operations) if (op.PolicyFile != null) yield return op.PolicyFile;
            }
            foreach (var f in b.FragmentFiles.Values) if (f != null) yield return f;
            foreach (var d in Pipeline.AllDocuments(b)) if (d.File != null) yield return d.File;
        }

        private static string Norm(string f) { return f.Replace('\\', '/'); }

        public List<Problem> For(ApiDef api, OperationDef op)
        {
            return cache.GetOrAdd(op, _ =>
            {
                var result = new List<Problem>(general);
                var seenFiles = new HashSet<string>(StringComparer.Ordinal);
                var seenDocs = new HashSet<PolicyDocument>();
                // (file, document): the document is null when the file could not be read or parsed.
                var queue = new Queue<KeyValuePair<string, PolicyDocument>>();
                Action<string, PolicyDocument> visit = (file, doc) =>
                {
                    if (file == null && doc != null) file = doc.File;
                    if (file != null || doc != null) queue.Enqueue(new KeyValuePair<string, PolicyDocument>(file, doc));
                };
                visit(bundle.GlobalFile, bundle.Global);
                visit(api.PolicyFile, api.Policy);
                visit(op.PolicyFile, op.Policy);
                while (queue.Count > 0)
                {
                    var item = queue.Dequeue();
                    List<Problem> l;
                    if (item.Key != null && seenFiles.Add(Norm(item.Key)) && byFile.TryGetValue(Norm(item.Key), out l)) result.AddRange(l);
                    var d = item.Value;
                    // A file that failed to parse has no document: which fragments it would include is
                    // unknown, but its own problems (added above) already stop the request.
                    if (d == null || !seenDocs.Add(d)) continue;
                    foreach (var id in FragmentIds(d))
                    {
                        PolicyDocument f;
                        bundle.Fragments.TryGetValue(id, out f);
                        string file;
                        bundle.FragmentFiles.TryGetValue(id, out file);
                        // An id the manifest does not list is reported at the include-fragment element.
                        visit(file, f);
                    }
                }
                return result;
            });
        }

        private static IEnumerable<string> FragmentIds(PolicyDocument d)
        {
            var roots = d.Sections.Values.ToList();
            if (d.Root != null) roots.Add(d.Root);
            var stack = new Stack<PolicyNode>(roots.Where(r => r != null));
            while (stack.Count > 0)
            {
                var n = stack.Pop();
                if (n.Name == "include-fragment")
                {
                    var a = n.Attribute("fragment-id");
                    if (a != null && a.Value != null && !a.Value.IsExpression && a.Value.Literal != null) yield return a.Value.Literal;
                }
                foreach (var c in n.Children) stack.Push(c);
            }
        }
    }

    public sealed class GatewayServer
    {
        public const int MaxRequestBody = 4 * 1024 * 1024;

        private sealed class Active
        {
            public HttpListenerContext Context;
            public volatile BackendStream Streaming;
        }

        private readonly Services services;
        private readonly Pipeline pipeline;
        private readonly Router router;
        private readonly ProblemIndex problems;
        private readonly ConcurrentDictionary<long, Active> active = new ConcurrentDictionary<long, Active>();
        private long nextId;
        private HttpListener listener;
        private Thread acceptThread;
        private volatile bool stopping;
        public string Host { get; private set; }
        public int Port { get; private set; }

        private static readonly MethodInfo addWithoutValidate =
            typeof(WebHeaderCollection).GetMethod("AddWithoutValidate", BindingFlags.Instance | BindingFlags.NonPublic, null, new[] { typeof(string), typeof(string) }, null);

        public GatewayServer(Services services, Pipeline pipeline, ProblemIndex problems)
        {
            this.services = services;
            this.pipeline = pipeline;
            this.problems = problems;
            router = new Router(services.Bundle);
        }

        /// <summary>Binds host:port (port 0: a free port) and starts accepting.</summary>
        public void Start(string host, int port)
        {
            Host = host;
            var prefixHost = host == "0.0.0.0" || host == "*" || host == "+" ? "*" : host.Contains(":") && !host.StartsWith("[") ? "[" + host + "]" : host;
            Exception last = null;
            for (int attempt = 0; attempt < 10; attempt++)
            {
                int p = port != 0 ? port : FreePort(host);
                var l = new HttpListener { IgnoreWriteExceptions = false };
                l.Prefixes.Add("http://" + prefixHost + ":" + p + "/");
                try
                {
                    l.Start();
                    listener = l;
                    Port = p;
                    if (prefixHost != "*") AcceptAnyHost(l, prefixHost, p);
                    break;
                }
                catch (Exception e)
                {
                    last = e;
                    try { l.Close(); } catch (Exception) { }
                    if (port != 0) break;
                }
            }
            if (listener == null) throw new InvalidOperationException("cannot listen on " + host + ":" + port + ": " + (last != null ? last.Message : "?"));
            acceptThread = new Thread(AcceptLoop) { IsBackground = true, Name = "accept" };
            acceptThread.Start();
        }

        /// <summary>
        /// Mono's HttpListener answers 400 "Invalid host" when the Host header names another host than
        /// the prefix (localhost vs 127.0.0.1, or a public name a test sends). A "*" prefix would bind
        /// every interface, so instead a host wildcard is added to the endpoint already bound to the
        /// chosen address (Mono's own mechanism for "*", reached through reflection). When that fails,
        /// only Host headers naming the prefix host are accepted (logged).
        /// </summary>
        private void AcceptAnyHost(HttpListener l, string host, int port)
        {
            try
            {
                var asm = typeof(HttpListener).Assembly;
                var mgr = asm.GetType("System.Net.EndPointManager", true);
                var prefixType = asm.GetType("System.Net.ListenerPrefix", true);
                var table = (System.Collections.Hashtable)mgr.GetField("ip_to_endpoints", BindingFlags.Static | BindingFlags.NonPublic).GetValue(null);
                IPAddress ip;
                if (!IPAddress.TryParse(host.Trim('[', ']'), out ip)) ip = Dns.GetHostAddresses(host)[0];
                object epl;
                lock (table)
                {
                    var ports = (System.Collections.Hashtable)table[ip];
                    epl = ports != null ? ports[port] : null;
                }
                if (epl == null) throw new InvalidOperationException("no endpoint listener for " + ip + ":" + port);
                var prefix = Activator.CreateInstance(prefixType, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public, null,
                    new object[] { "http://*:" + port + "/" }, null);
                var add = epl.GetType().GetMethod("AddPrefix", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic);
                add.Invoke(epl, new object[] { prefix, l });
            }
            catch (Exception e)
            {
                services.Log("gateway: requests must use Host " + host + ":" + port + " (cannot accept other Host names: " + e.GetBaseException().Message + ")");
            }
        }

        private static int FreePort(string host)
        {
            IPAddress ip;
            if (!IPAddress.TryParse(host, out ip) || ip.Equals(IPAddress.Any)) ip = IPAddress.Loopback;
            var t = new TcpListener(ip, 0);
            t.Start();
            int port = ((IPEndPoint)t.LocalEndpoint).Port;
            t.Stop();
            return port;
        }

        private void AcceptLoop()
        {
            while (!stopping)
            {
                HttpListenerContext ctx;
                try { ctx = listener.GetContext(); }
                catch (Exception)
                {
                    if (stopping) return;
                    Thread.Sleep(10);
                    continue;
                }
                var t = new Thread(() => Handle(ctx), 1024 * 1024) { IsBackground = true, Name = "request" };
                t.Start();
            }
        }

        /// <summary>
        /// Stops: refuses new requests, aborts the backend side of streaming answers (their clients
        /// get a clean end of stream), waits up to grace for in-flight requests, then closes everything.
        /// </summary>
        public void Stop(TimeSpan grace)
        {
            if (stopping) return;
            stopping = true;
            foreach (var a in active.Values) if (a.Streaming != null) a.Streaming.Abort();
            var until = DateTime.UtcNow + grace;
            while (!active.IsEmpty && DateTime.UtcNow < until)
            {
                foreach (var a in active.Values) if (a.Streaming != null) a.Streaming.Abort();
                Thread.Sleep(20);
            }
            foreach (var a in active.Values)
                try { a.Context.Response.Abort(); } catch (Exception) { }
            // The listener is deliberately not closed: Mono's HttpListener.Close writes a bogus
            // "200, Content-Length: 0" on every idle keep-alive connection. The process exits next
            // and the kernel closes those connections cleanly.
        }

        private void Handle(HttpListenerContext ctx)
        {
            var id = Interlocked.Increment(ref nextId);
            var a = new Active { Context = ctx };
            active[id] = a;
            var sw = Stopwatch.StartNew();
            var method = ctx.Request.HttpMethod;
            string path = "/";
            int status = 0;
            string note = "";
            try
            {
                string query;
                SplitRawUrl(ctx.Request.RawUrl, out path, out query);
                if (stopping)
                {
                    status = Write(ctx, Http.StatusMessage(503, "The gateway is shutting down"), a, method);
                    return;
                }
                if (method == "GET" && path == ManagedIdentity.JwksPath)
                {
                    var r = new ResponseState();
                    r.Headers.Set("Content-Type", "application/json");
                    r.Headers.Set("Cache-Control", "no-store");
                    r.Body = Http.Utf8.GetBytes(services.ManagedIdentity.Jwks());
                    status = Write(ctx, r, a, method);
                    return;
                }
                byte[] body;
                if (!ReadBody(ctx.Request, out body))
                {
                    status = Write(ctx, Http.StatusMessage(413, "Request body is larger than " + MaxRequestBody + " bytes"), a, method);
                    return;
                }

                var api = router.FindApi(path);
                if (api == null)
                {
                    status = Write(ctx, NotFound(), a, method);
                    return;
                }
                var opPath = Router.OperationPath(api, path);
                var headers = ctx.Request.Headers;
                bool preflight = method == "OPTIONS" && headers["Origin"] != null && headers["Access-Control-Request-Method"] != null
                                 && !router.HasExplicitMethod(api, "OPTIONS", opPath);
                if (preflight)
                {
                    var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                    var op = router.FindOperation(api, headers["Access-Control-Request-Method"].Trim(), opPath, parameters)
                             ?? router.FindOperation(api, null, opPath, parameters);
                    if (op != null)
                    {
                        var bad = problems.For(api, op);
                        if (bad.Count > 0) { status = Write(ctx, BundleProblems(bad), a, method); note = "bundle problems"; return; }
                        var exec = NewExec(ctx, path, query, body, api, op, parameters);
                        if (pipeline.ExecutePreflight(exec))
                        {
                            status = Write(ctx, exec.Response, a, method);
                            note = "preflight";
                            return;
                        }
                    }
                }
                {
                    var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                    var op = router.FindOperation(api, method, opPath, parameters);
                    if (op == null)
                    {
                        status = Write(ctx, NotFound(), a, method);
                        return;
                    }
                    var bad = problems.For(api, op);
                    if (bad.Count > 0) { status = Write(ctx, BundleProblems(bad), a, method); note = "bundle problems"; return; }
                    var exec = NewExec(ctx, path, query, body, api, op, parameters);
                    pipeline.Execute(exec);
                    if (exec.Response.BodyStream != null) note = "streamed";
                    status = Write(ctx, exec.Response, a, method);
                }
            }
            catch (Exception e)
            {
                services.Log("internal error on " + method + " " + path + ": " + e.GetType().Name + ": " + e.Message);
                try
                {
                    status = Write(ctx, Http.StatusMessage(500, "Internal server error"), a, method);
                }
                catch (Exception) { try { ctx.Response.Abort(); } catch (Exception) { } }
            }
            finally
            {
                Active gone;
                active.TryRemove(id, out gone);
                services.Log(method + " " + path + " " + (status == 0 ? "-" : status.ToString()) + " " + sw.ElapsedMilliseconds + "ms" + (note.Length > 0 ? " (" + note + ")" : ""));
            }
        }

        private Exec NewExec(HttpListenerContext ctx, string path, string query, byte[] body, ApiDef api, OperationDef op, Dictionary<string, string> parameters)
        {
            var exec = new Exec(services);
            var req = exec.Request;
            req.Method = ctx.Request.HttpMethod;
            foreach (var name in ctx.Request.Headers.AllKeys)
                foreach (var v in Http.RawValues(ctx.Request.Headers, name)) req.Headers.Add(name, v);
            string h; int port;
            SplitHost(req.Headers.Joined("Host"), Port, out h, out port);
            req.Url = new UrlState { Scheme = "http", Host = h, Port = port, Path = path, Query = UrlState.ParseQuery(query) };
            req.OriginalUrl = req.Url.Clone();
            req.Body = body;
            IPEndPoint remote = null;
            try { remote = ctx.Request.RemoteEndPoint; } catch (Exception) { }
            req.ClientIp = remote != null ? remote.Address.ToString() : "127.0.0.1";
            req.MatchedParameters = parameters;
            exec.Api = api;
            exec.Operation = op;
            exec.BackendUrl = api.ServiceUrl;
            return exec;
        }

        private static ResponseState NotFound()
        {
            return Http.StatusMessage(404, "Resource not found");
        }

        private static ResponseState BundleProblems(List<Problem> bad)
        {
            return Http.JsonResponse(500, new JObject
            {
                ["statusCode"] = 500,
                ["message"] = "The policy bundle has problems; this request's policies cannot run until they are fixed.",
                ["problems"] = new JArray(bad.Select(p => (object)p.ToString()).ToArray()),
            });
        }

        private static void SplitRawUrl(string raw, out string path, out string query)
        {
            raw = raw ?? "/";
            if (raw.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || raw.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
            {
                Uri u;
                if (Uri.TryCreate(raw, UriKind.Absolute, out u)) raw = u.PathAndQuery;
            }
            int q = raw.IndexOf('?');
            path = q < 0 ? raw : raw.Substring(0, q);
            query = q < 0 ? "" : raw.Substring(q);
            if (!path.StartsWith("/")) path = "/" + path;
        }

        private static void SplitHost(string hostHeader, int dfltPort, out string host, out int port)
        {
            host = "127.0.0.1";
            port = dfltPort;
            if (string.IsNullOrEmpty(hostHeader)) return;
            var hh = hostHeader.Trim();
            int colon = hh.LastIndexOf(':');
            int bracket = hh.LastIndexOf(']');
            if (colon > bracket && colon >= 0)
            {
                int p;
                if (int.TryParse(hh.Substring(colon + 1), out p)) port = p;
                host = hh.Substring(0, colon);
            }
            else
            {
                host = hh;
                port = 80;
            }
        }

        private static bool ReadBody(HttpListenerRequest req, out byte[] body)
        {
            body = new byte[0];
            if (!req.HasEntityBody) return true;
            if (req.ContentLength64 > MaxRequestBody) return false;
            using (var ms = new MemoryStream())
            {
                var buf = new byte[65536];
                var s = req.InputStream;
                int n;
                while ((n = s.Read(buf, 0, buf.Length)) > 0)
                {
                    ms.Write(buf, 0, n);
                    if (ms.Length > MaxRequestBody) return false;
                }
                body = ms.ToArray();
            }
            return true;
        }

        /// <summary>Writes the response; a streamed body is copied as it arrives, flushed after every read.</summary>
        private int Write(HttpListenerContext ctx, ResponseState r, Active a, string method)
        {
            var res = ctx.Response;
            if (stopping) res.KeepAlive = false;
            res.StatusCode = r.StatusCode;
            res.StatusDescription = !string.IsNullOrEmpty(r.StatusReason) ? r.StatusReason : (Http.Reason(r.StatusCode).Length > 0 ? Http.Reason(r.StatusCode) : "Status");
            foreach (var e in r.Headers.Entries)
            {
                if (Http.HopByHop.Contains(e.Key)) continue;
                if (Http.SeparateLines.Contains(e.Key)) foreach (var v in e.Value) AddHeader(res, e.Key, v);
                else AddHeader(res, e.Key, string.Join(",", e.Value));
            }
            bool noBody = method == "HEAD" || r.StatusCode == 204 || r.StatusCode == 304 || r.StatusCode < 200;
            if (r.BodyStream != null)
            {
                var stream = r.BodyStream;
                a.Streaming = stream as BackendStream;
                try
                {
                    if (noBody) { res.ContentLength64 = 0; res.OutputStream.Close(); return r.StatusCode; }
                    res.SendChunked = true;
                    var output = res.OutputStream;
                    var buf = new byte[16384];
                    while (true)
                    {
                        int n;
                        try { n = stream.Read(buf, 0, buf.Length); }
                        catch (Exception e)
                        {
                            if (stopping) break;
                            // The backend broke off: end the client's stream abruptly too, so it does not look complete.
                            services.Log("backend stream of " + method + " " + ctx.Request.Url.AbsolutePath + " failed: " + e.Message);
                            res.Abort();
                            return r.StatusCode;
                        }
                        if (n <= 0) break;
                        try
                        {
                            output.Write(buf, 0, n);
                            output.Flush();
                        }
                        catch (Exception)
                        {
                            // The client went away: release the backend connection.
                            services.Log("client disconnected from " + method + " " + ctx.Request.Url.AbsolutePath + "; closing the backend stream");
                            try { res.Abort(); } catch (Exception) { }
                            return r.StatusCode;
                        }
                    }
                    try { output.Close(); } catch (Exception) { }
                }
                finally
                {
                    a.Streaming = null;
                    try { stream.Dispose(); } catch (Exception) { }
                    r.BodyStream = null;
                }
                return r.StatusCode;
            }
            var body = r.Body ?? new byte[0];
            if (noBody)
            {
                long length = 0;
                // HEAD: announce the length the backend announced (or of the body a policy built).
                if (method == "HEAD" && !long.TryParse(r.Headers.Joined("Content-Length") ?? "", out length)) length = body.Length;
                res.ContentLength64 = length;
                res.OutputStream.Close();
                return r.StatusCode;
            }
            res.ContentLength64 = body.Length;
            var o = res.OutputStream;
            if (body.Length > 0) o.Write(body, 0, body.Length);
            o.Close();
            return r.StatusCode;
        }

        private static void AddHeader(HttpListenerResponse res, string name, string value)
        {
            try { res.Headers.Add(name, value); }
            catch (ArgumentException)
            {
                if (addWithoutValidate != null) addWithoutValidate.Invoke(res.Headers, new object[] { name, value });
            }
        }
    }
}
