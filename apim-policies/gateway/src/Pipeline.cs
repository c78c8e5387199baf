// Runs one request through the effective policy of its operation, as APIM does:
// global -> API -> operation scopes joined by <base/>, sections inbound -> backend
// -> outbound, and on-error with context.LastError when anything fails.
//
// Decisions (APIM docs: api-management-howto-policies, api-management-error-handling-policies):
// - A scope with no policy document at all behaves like APIM's default document, whose
//   every section is just <base/> (it inherits everything).
// - A document that exists but lacks a section: that section is empty and the broader
//   scope's section is NOT inherited. The docs say a section is inherited only through
//   <base/>, and policies.xsd makes every section optional, so a missing section has no
//   <base/> to inherit through.
// - return-response (and policies that answer directly, such as a cors preflight) end the
//   pipeline: nothing after them runs, not the rest of the section, not forward-request,
//   not outbound. The docs only say it "cancels pipeline execution"; that nothing else
//   runs is the usual reading, an inference (see shared/reference/apim/expressions.md 5).
// - Response hooks registered by policies (cors headers on actual requests, rate-limit
//   counters) are applied only when the pipeline completes normally through outbound:
//   not after return-response, not on the on-error path. APIM users report the same for
//   errors (MicrosoftDocs/azure-docs#31889: cors headers missing on quota/check-header
//   failures); for return-response it is an inference.
// - An error sends processing to on-error with context.LastError set; the response on
//   entry to on-error is the failing policy's own answer (validate-jwt 401, rate-limit
//   429, check-header ...) or, for other errors, 500 with a JSON body naming the error.
//   If on-error fails too, the client gets 500 naming that second error.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Text;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>A policy failure that also carries the response APIM answers with (401 of validate-jwt, 429 of rate-limit-by-key, ...).</summary>
    public class PolicyResponseException : PolicyException
    {
        public readonly ResponseState Response;
        public PolicyResponseException(string source, string reason, string message, SourceRef where, ResponseState response)
            : base(source, reason, message, where) { Response = response; }
    }

    /// <summary>Per-request bookkeeping of the pipeline, kept in Exec.PipelineState and reached through Of.</summary>
    public sealed class ExecState
    {
        /// <summary>exec's state, created on first use (kept in Exec.PipelineState).</summary>
        public static ExecState Of(Exec exec)
        {
            return exec.PipelineState ?? System.Threading.Interlocked.CompareExchange(ref exec.PipelineState, new ExecState(), null) ?? exec.PipelineState;
        }

        internal sealed class Frame
        {
            public Pipeline.Level Level;
            public string Scope;
            /// <summary>Path of the include-fragment elements this frame runs inside ("" at a scope's section).</summary>
            public string Prefix;
        }

        internal readonly List<Frame> Frames = new List<Frame>();
        internal Pipeline Pipeline;
        /// <summary>Applied to the final response when the pipeline completed normally (outbound ran to its end).</summary>
        public readonly List<Action> ResponseHooks = new List<Action>();
        /// <summary>Run once the response is final, whatever happened (rate-limit increment-condition).</summary>
        public readonly List<Action> Completions = new List<Action>();
        /// <summary>Set once a cors policy matched this request, so later cors policies do nothing.</summary>
        public bool CorsHandled;
        internal int FragmentDepth;
    }

    public sealed class Pipeline
    {
        public enum Level { Global = 0, Api = 1, Operation = 2 }
        private static readonly string[] MainSections = { "inbound", "backend", "outbound" };
        private const string KeyScope = "gateway.scope", KeyPath = "gateway.path", KeyPolicyId = "gateway.policyId", KeyNode = "gateway.node";

        private readonly Services services;
        /// <summary>Each element's path inside its section or fragment, e.g. choose[1]/when[2]/set-variable[1].</summary>
        private readonly Dictionary<PolicyNode, string> paths = new Dictionary<PolicyNode, string>(ReferenceComparer.Instance);

        public Pipeline(Services services)
        {
            this.services = services;
            var b = services.Bundle;
            if (b != null)
            {
                foreach (var doc in AllDocuments(b)) IndexDocument(doc);
            }
            // Every policy runs inside a wrapper that records where an error happened.
            foreach (var name in services.Policies.Keys.ToList())
            {
                var p = services.Policies[name];
                if (!(p is Tracked)) services.Policies[name] = new Tracked(p);
            }
        }

        public static IEnumerable<PolicyDocument> AllDocuments(Bundle b)
        {
            if (b.Global != null) yield return b.Global;
            foreach (var api in b.Apis)
            {
                if (api.Policy != null) yield return api.Policy;
                foreach (var op in api.Operations) if (op.Policy != null) yield return op.Policy;
            }
            foreach (var f in b.Fragments.Values) if (f != null) yield return f;
        }

        private void IndexDocument(PolicyDocument doc)
        {
            foreach (var sec in doc.Sections.Values) if (sec != null) IndexChildren(sec, "");
            if (doc.Kind == "fragment" && doc.Root != null) IndexChildren(doc.Root, "");
        }

        private void IndexChildren(PolicyNode parent, string prefix)
        {
            var seen = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var c in parent.Children)
            {
                int n; seen.TryGetValue(c.Name, out n); n++; seen[c.Name] = n;
                var p = prefix + c.Name + "[" + n + "]";
                paths[c] = p;
                IndexChildren(c, p + "/");
            }
        }

        public static string ScopeName(Level l) { return l == Level.Global ? "global" : l == Level.Api ? "api" : "operation"; }

        private static PolicyDocument DocumentAt(Exec exec, Pipeline.Level level, Bundle bundle)
        {
            switch (level)
            {
                case Level.Global: return bundle != null ? bundle.Global : null;
                case Level.Api: return exec.Api != null ? exec.Api.Policy : null;
                default: return exec.Operation != null ? exec.Operation.Policy : null;
            }
        }

        // ------------------------------------------------------------------ execution

        /// <summary>Runs the request through inbound, backend and outbound (and on-error when something fails).</summary>
        public void Execute(Exec exec)
        {
            var st = ExecState.Of(exec);
            st.Pipeline = this;
            bool completed = false;
            try
            {
                foreach (var section in MainSections)
                {
                    if (exec.Ended) break;
                    exec.Section = section;
                    RunLevel(exec, Level.Operation, section);
                }
                completed = !exec.Ended;
            }
            catch (Exception e)
            {
                HandleError(exec, e);
            }
            if (completed) RunHooks(exec, st.ResponseHooks, "response hook");
            RunHooks(exec, st.Completions, "completion");
        }

        /// <summary>
        /// Answers a CORS preflight: only the cors policies that are direct children of the effective
        /// inbound section are evaluated (cors-policy.md). Returns false when there is none.
        /// </summary>
        public bool ExecutePreflight(Exec exec)
        {
            var st = ExecState.Of(exec);
            st.Pipeline = this;
            exec.Section = "inbound";
            try
            {
                int seen = 0;
                if (VisitInbound(exec, Level.Operation, node => { seen++; return CorsPolicy.Preflight(node, exec); })) return true;
                if (seen == 0) return false;
                // Every cors policy let the preflight through unmatched (terminate-unmatched-request="false"): an empty 200.
                SetResponse(exec, new ResponseState());
                return true;
            }
            catch (Exception e)
            {
                HandleError(exec, e);
                return true;
            }
        }

        /// <summary>Walks the cors elements directly in the effective inbound section, expanding base and include-fragment.</summary>
        private bool VisitInbound(Exec exec, Level level, Func<PolicyNode, bool> onCors)
        {
            var doc = DocumentAt(exec, level, services.Bundle);
            if (doc == null) return level > Level.Global && VisitInbound(exec, level - 1, onCors);
            PolicyNode sec;
            if (!doc.Sections.TryGetValue("inbound", out sec) || sec == null) return false;
            var st = ExecState.Of(exec);
            var frame = new ExecState.Frame { Level = level, Scope = ScopeName(level), Prefix = "" };
            st.Frames.Add(frame);
            try { return VisitNodes(exec, sec.Children, level, onCors, 0); }
            catch (Exception e) { MarkScope(e, frame); throw; }
            finally { st.Frames.RemoveAt(st.Frames.Count - 1); }
        }

        private bool VisitNodes(Exec exec, IEnumerable<PolicyNode> nodes, Level level, Func<PolicyNode, bool> onCors, int depth)
        {
            foreach (var n in nodes)
            {
                if (n.Name == "base")
                {
                    if (level > Level.Global && VisitInbound(exec, level - 1, onCors)) return true;
                }
                else if (n.Name == "include-fragment" && depth < 16)
                {
                    var id = n.Attribute("fragment-id");
                    PolicyDocument frag;
                    if (id != null && !id.Value.IsExpression && services.Bundle.Fragments.TryGetValue(id.Value.Literal ?? "", out frag) && frag.Root != null)
                        if (VisitNodes(exec, frag.Root.Children, level, onCors, depth + 1)) return true;
                }
                else if (n.Name == "cors")
                {
                    bool handled;
                    try { handled = onCors(n); }
                    catch (Exception e) { Mark(e, n, exec); throw; }
                    if (handled) return true;
                }
            }
            return false;
        }

        /// <summary>Runs one scope's section; a scope without a document delegates to the broader one.</summary>
        private void RunLevel(Exec exec, Level level, string section)
        {
            var doc = DocumentAt(exec, level, services.Bundle);
            if (doc == null)
            {
                if (level > Level.Global) RunLevel(exec, level - 1, section);
                return;
            }
            PolicyNode sec;
            if (!doc.Sections.TryGetValue(section, out sec) || sec == null) return;
            var st = ExecState.Of(exec);
            var frame = new ExecState.Frame { Level = level, Scope = ScopeName(level), Prefix = "" };
            st.Frames.Add(frame);
            try { exec.Run(sec.Children); }
            catch (Exception e) { MarkScope(e, frame); throw; }
            finally { st.Frames.RemoveAt(st.Frames.Count - 1); }
        }

        /// <summary>&lt;base/&gt;: runs the same section of the next broader scope; nothing at global scope.</summary>
        public void RunBase(Exec exec)
        {
            var st = ExecState.Of(exec);
            if (st.Frames.Count == 0) return;
            var level = st.Frames[st.Frames.Count - 1].Level;
            if (level == Level.Global) return;
            RunLevel(exec, level - 1, exec.Section);
        }

        /// <summary>include-fragment: runs the fragment's policies at this position, in the including scope.</summary>
        public void RunFragment(Exec exec, PolicyNode includeNode, PolicyDocument fragment)
        {
            var st = ExecState.Of(exec);
            if (st.FragmentDepth >= 16)
                throw new PolicyException("include-fragment", "FragmentRecursion", "fragments include each other more than 16 levels deep", includeNode.Where);
            var outer = st.Frames.Count > 0 ? st.Frames[st.Frames.Count - 1] : new ExecState.Frame { Level = Level.Operation, Scope = "operation", Prefix = "" };
            var frame = new ExecState.Frame { Level = outer.Level, Scope = outer.Scope, Prefix = outer.Prefix + PathOf(includeNode) + "/" };
            st.Frames.Add(frame);
            st.FragmentDepth++;
            try { exec.Run(fragment.Root != null ? (IEnumerable<PolicyNode>)fragment.Root.Children : new PolicyNode[0]); }
            finally { st.FragmentDepth--; st.Frames.RemoveAt(st.Frames.Count - 1); }
        }

        // ------------------------------------------------------------------ errors

        private void HandleError(Exec exec, Exception e)
        {
            var first = Describe(exec, e);
            exec.LastError = first;
            services.Log("error: " + Summary(first));
            var pre = e as PolicyResponseException;
            SetResponse(exec, pre != null && pre.Response != null ? pre.Response : ErrorResponse(first, null));
            exec.Ended = false;
            exec.Section = "on-error";
            try
            {
                RunLevel(exec, Level.Operation, "on-error");
            }
            catch (Exception e2)
            {
                var second = Describe(exec, e2);
                exec.LastError = second;
                services.Log("error in on-error: " + Summary(second));
                SetResponse(exec, ErrorResponse(second, first));
            }
        }

        /// <summary>Replaces the response, releasing an unread backend stream of the old one.</summary>
        public static void SetResponse(Exec exec, ResponseState r)
        {
            var old = exec.Response;
            if (old != null && !ReferenceEquals(old, r) && old.BodyStream != null)
            {
                try { old.BodyStream.Dispose(); } catch (Exception) { }
                old.BodyStream = null;
            }
            exec.Response = r;
        }

        private void RunHooks(Exec exec, List<Action> hooks, string what)
        {
            foreach (var h in hooks)
            {
                try { h(); }
                catch (Exception e) { services.Log(what + " failed: " + e.Message); }
            }
        }

        private static string Summary(LastErrorInfo le)
        {
            return le.Source + " " + le.Reason + " in " + le.Scope + "/" + le.Section +
                   (string.IsNullOrEmpty(le.Path) ? "" : " at " + le.Path) + ": " + le.Message;
        }

        /// <summary>The 500 APIM answers for an unhandled error, naming context.LastError (never a stack trace).</summary>
        public static ResponseState ErrorResponse(LastErrorInfo le, LastErrorInfo original)
        {
            var body = new JObject
            {
                ["statusCode"] = 500,
                ["message"] = "Internal server error",
                ["lastError"] = ErrorJson(le),
            };
            if (original != null) body["originalError"] = ErrorJson(original);
            return Http.JsonResponse(500, body);
        }

        private static JObject ErrorJson(LastErrorInfo le)
        {
            var o = new JObject();
            o["source"] = le.Source; o["reason"] = le.Reason; o["message"] = le.Message;
            o["scope"] = le.Scope; o["section"] = le.Section; o["path"] = le.Path;
            if (le.PolicyId != null) o["policyId"] = le.PolicyId;
            return o;
        }

        public string PathOf(PolicyNode node)
        {
            string p;
            return paths.TryGetValue(node, out p) ? p : node.Name;
        }

        /// <summary>Records where an error happened (the innermost element wins). Call from a catch block and rethrow.</summary>
        public static void Mark(Exception e, PolicyNode node, Exec exec, string source = null)
        {
            if (e.Data.Contains(KeyNode)) return;
            var st = ExecState.Of(exec);
            var frame = st.Frames.Count > 0 ? st.Frames[st.Frames.Count - 1] : null;
            var pipeline = st.Pipeline;
            e.Data[KeyNode] = source ?? node.Name;
            e.Data[KeyPath] = (frame != null ? frame.Prefix : "") + (pipeline != null ? pipeline.PathOf(node) : node.Name);
            if (frame != null && !e.Data.Contains(KeyScope)) e.Data[KeyScope] = frame.Scope;
            var id = node.Attribute("id");
            if (id != null && id.Value != null && !id.Value.IsExpression) e.Data[KeyPolicyId] = id.Value.Literal;
        }

        private static void MarkScope(Exception e, ExecState.Frame frame)
        {
            if (!e.Data.Contains(KeyScope)) e.Data[KeyScope] = frame.Scope;
        }

        private static LastErrorInfo Describe(Exec exec, Exception e)
        {
            var node = e.Data[KeyNode] as string;
            var info = new LastErrorInfo
            {
                Scope = e.Data[KeyScope] as string,
                Section = exec.Section,
                Path = e.Data[KeyPath] as string ?? "",
                PolicyId = e.Data[KeyPolicyId] as string,
            };
            var pe = e as PolicyException;
            if (pe != null)
            {
                // An expression failure is reported by the element that holds the expression.
                info.Source = pe.Source == "expression" && node != null ? node : pe.Source;
                info.Reason = pe.Reason;
                info.Message = pe.Message;
            }
            else
            {
                info.Source = node ?? "gateway";
                info.Reason = "InternalError";
                info.Message = e.GetType().Name + ": " + e.Message;
            }
            return info;
        }

        /// <summary>Wraps a policy so an error escaping it is attributed to its element.</summary>
        private sealed class Tracked : IPolicy
        {
            private readonly IPolicy inner;
            public Tracked(IPolicy inner) { this.inner = inner; }
            public void Execute(PolicyNode node, Exec exec)
            {
                try { inner.Execute(node, exec); }
                catch (Exception e) { Mark(e, node, exec); throw; }
            }
        }

        private sealed class ReferenceComparer : IEqualityComparer<PolicyNode>
        {
            public static readonly ReferenceComparer Instance = new ReferenceComparer();
            public bool Equals(PolicyNode a, PolicyNode b) { return ReferenceEquals(a, b); }
            public int GetHashCode(PolicyNode n) { return RuntimeHelpers.GetHashCode(n); }
        }
    }
}
