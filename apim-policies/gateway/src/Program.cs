// Command line of the local gateway:
//   mono gateway.exe serve --manifest <apis.json> --named-values <nv.json> [--port 8000] [--host 127.0.0.1]
//   mono gateway.exe check --manifest <apis.json> --named-values <nv.json>
using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using System.Threading;

namespace Gateway
{
    public static class Program
    {
        private const string Usage =
            "usage:\n" +
            "  gateway.exe serve --manifest <apis.json> --named-values <named-values.json> [--port 8000] [--host 127.0.0.1]\n" +
            "  gateway.exe check --manifest <apis.json> --named-values <named-values.json>\n" +
            "serve prints \"listening on http://<host>:<port>\" once ready (--port 0 picks a free port); logs go to stderr.\n" +
            "check prints every problem of the bundle as file:line: message and exits 1 if there is any.";

        public static int Main(string[] args)
        {
            if (args.Length == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help")
            {
                Console.Error.WriteLine(Usage);
                return args.Length == 0 ? 2 : 0;
            }
            Dictionary<string, string> opts;
            string error;
            if (!ParseOptions(args.Skip(1).ToArray(), out opts, out error))
            {
                Console.Error.WriteLine("gateway: " + error);
                Console.Error.WriteLine(Usage);
                return 2;
            }
            string manifest, namedValues;
            if (!opts.TryGetValue("manifest", out manifest) || !opts.TryGetValue("named-values", out namedValues))
            {
                Console.Error.WriteLine("gateway: --manifest and --named-values are required");
                Console.Error.WriteLine(Usage);
                return 2;
            }
            switch (args[0])
            {
                case "serve": return Serve(manifest, namedValues, opts);
                case "check": return Check(manifest, namedValues);
                default:
                    Console.Error.WriteLine("gateway: unknown command \"" + args[0] + "\"");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }

        private static bool ParseOptions(string[] args, out Dictionary<string, string> opts, out string error)
        {
            opts = new Dictionary<string, string>(StringComparer.Ordinal);
            error = null;
            var known = new HashSet<string> { "manifest", "named-values", "port", "host" };
            for (int i = 0; i < args.Length; i++)
            {
                var a = args[i];
                if (!a.StartsWith("--")) { error = "unexpected argument \"" + a + "\""; return false; }
                string name = a.Substring(2), value;
                int eq = name.IndexOf('=');
                if (eq >= 0) { value = name.Substring(eq + 1); name = name.Substring(0, eq); }
                else
                {
                    if (i + 1 >= args.Length) { error = "--" + name + " needs a value"; return false; }
                    value = args[++i];
                }
                if (!known.Contains(name)) { error = "unknown option --" + name; return false; }
                opts[name] = value;
            }
            return true;
        }

        private static int Check(string manifest, string namedValues)
        {
            var problems = BundleCheck.Run(manifest, namedValues);
            foreach (var p in problems) Console.Out.WriteLine(p.ToString());
            Console.Out.Flush();
            return problems.Count > 0 ? 1 : 0;
        }

        private static int Serve(string manifest, string namedValues, Dictionary<string, string> opts)
        {
            int port = 8000;
            string portText;
            if (opts.TryGetValue("port", out portText) && (!int.TryParse(portText, out port) || port < 0 || port > 65535))
            {
                Console.Error.WriteLine("gateway: --port must be a number between 0 and 65535");
                return 2;
            }
            string host;
            if (!opts.TryGetValue("host", out host) || string.IsNullOrWhiteSpace(host)) host = "127.0.0.1";

            var log = new Action<string>(s => { lock (Console.Error) Console.Error.WriteLine(Redact.Text(s)); });
            // Many long-lived streams go to the same backend: lift .NET's 2-connections-per-host default.
            ServicePointManager.DefaultConnectionLimit = 10000;
            ServicePointManager.Expect100Continue = false;
            ServicePointManager.UseNagleAlgorithm = false;
            // Mono's HttpWebRequest and HttpListener run their work as tasks on the thread pool, and the
            // synchronous calls wait for them: with the default minimum (one thread per core), 20
            // concurrent backend calls took 2.5-9 s to get their response headers while the pool slowly
            // added threads; with this minimum they take milliseconds. (Mono refuses a minimum above
            // the maximum, 200 by default.)
            int maxWorkers, maxIo;
            ThreadPool.GetMaxThreads(out maxWorkers, out maxIo);
            ThreadPool.SetMaxThreads(Math.Max(maxWorkers, 1000), Math.Max(maxIo, 1000));
            if (!ThreadPool.SetMinThreads(256, 256)) log("gateway: could not raise the thread pool minimum; concurrent streams may be slow to start");

            Bundle bundle;
            var problems = BundleCheck.Run(manifest, namedValues, out bundle);
            if (bundle == null)
            {
                foreach (var p in problems) log("problem: " + p);
                log("gateway: the bundle cannot be loaded");
                return 1;
            }
            foreach (var p in problems) log("problem: " + p);
            if (problems.Count > 0) log("gateway: " + problems.Count + " problem(s); requests whose policies touch them answer 500 naming them");

            var services = new Services { Bundle = bundle, Log = log };
            services.ContextFactory = ContextSurface.For;
            PolicySet.Register(services);
            var pipeline = new Pipeline(services);
            services.ManagedIdentity.Prewarm();
            var server = new GatewayServer(services, pipeline, new ProblemIndex(bundle, problems));
            try { server.Start(host, port); }
            catch (Exception e)
            {
                log("gateway: " + e.Message);
                return 1;
            }
            var stop = Signals.Install(log);
            Console.Out.WriteLine("listening on http://" + (host.Contains(":") && !host.StartsWith("[") ? "[" + host + "]" : host) + ":" + server.Port);
            Console.Out.Flush();
            stop.WaitOne();
            log("gateway: stopping");
            server.Stop(TimeSpan.FromSeconds(3));
            log("gateway: stopped");
            Signals.Exit(0);
            return 0;
        }
    }

    /// <summary>SIGTERM and SIGINT without Mono.Posix.dll: libMonoPosixHelper's signal slots (what Mono.Unix.UnixSignal uses), polled.</summary>
    internal static class Signals
    {
        [DllImport("MonoPosixHelper", EntryPoint = "Mono_Unix_UnixSignal_install")]
        private static extern IntPtr InstallSignal(int signum);

        [DllImport("libc", EntryPoint = "_exit")]
        private static extern void NativeExit(int code);

        /// <summary>
        /// Ends the process now. Environment.Exit makes Mono wait about two seconds for threads
        /// blocked in sockets; everything worth stopping has been stopped and flushed by then.
        /// </summary>
        public static void Exit(int code)
        {
            try { Console.Out.Flush(); Console.Error.Flush(); } catch (Exception) { }
            try { NativeExit(code); } catch (Exception) { }
            Environment.Exit(code);
        }

        public static WaitHandle Install(Action<string> log)
        {
            var stop = new ManualResetEvent(false);
            Console.CancelKeyPress += (s, e) => { e.Cancel = true; stop.Set(); };
            AppDomain.CurrentDomain.ProcessExit += (s, e) => stop.Set();
            try
            {
                var term = InstallSignal(15);
                var intr = InstallSignal(2);
                if (term == IntPtr.Zero || intr == IntPtr.Zero) throw new InvalidOperationException("signal slots unavailable");
                // struct signal_info { int signum; int count; ... }: count is bumped by the C handler.
                var t = new Thread(() =>
                {
                    while (!stop.WaitOne(100))
                        if (Marshal.ReadInt32(term, 4) > 0 || Marshal.ReadInt32(intr, 4) > 0) stop.Set();
                }) { IsBackground = true, Name = "signals" };
                t.Start();
            }
            catch (Exception e)
            {
                log("gateway: cannot catch SIGTERM (" + e.Message + "); it will end the process without a graceful stop");
            }
            return stop;
        }
    }

    /// <summary>Keeps tokens out of the logs.</summary>
    public static class Redact
    {
        private static readonly Regex Jwt = new Regex(@"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", RegexOptions.Compiled);
        private static readonly Regex Bearer = new Regex(@"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", RegexOptions.Compiled);

        public static string Text(string s)
        {
            if (string.IsNullOrEmpty(s)) return s;
            s = Jwt.Replace(s, "[token]");
            return Bearer.Replace(s, m => m.Groups[1].Value + " [redacted]");
        }
    }
}
