// Registration of every policy the local gateway implements, and helpers they share.
// Anything not registered here fails the request loudly (Exec.Run throws PolicyNotImplemented).
using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;

namespace Gateway
{
    public static class PolicySet
    {
        public static void Register(Services s)
        {
            var p = s.Policies;
            p["base"] = new BasePolicy();
            p["include-fragment"] = new IncludeFragmentPolicy();
            p["set-variable"] = new SetVariablePolicy();
            p["choose"] = new ChoosePolicy();
            p["return-response"] = new ReturnResponsePolicy();
            p["trace"] = new TracePolicy();
            p["set-status"] = new SetStatusPolicy();
            p["set-header"] = new SetHeaderPolicy();
            p["set-query-parameter"] = new SetQueryParameterPolicy();
            p["set-body"] = new SetBodyPolicy();
            p["set-method"] = new SetMethodPolicy();
            p["set-backend-service"] = new SetBackendServicePolicy();
            p["rewrite-uri"] = new RewriteUriPolicy();
            p["forward-request"] = new ForwardRequestPolicy();
            p["send-request"] = new SendRequestPolicy();
            p["cache-store-value"] = new CacheStoreValuePolicy();
            p["cache-lookup-value"] = new CacheLookupValuePolicy();
            p["cache-remove-value"] = new CacheRemoveValuePolicy();
            p["validate-jwt"] = new ValidateJwtPolicy();
            p["authentication-managed-identity"] = new AuthenticationManagedIdentityPolicy();
            p["cors"] = new CorsPolicy();
            p["rate-limit-by-key"] = new RateLimitByKeyPolicy();
            p["check-header"] = new CheckHeaderPolicy();
        }
    }

    /// <summary>Helpers shared by the policy implementations.</summary>
    internal static class P
    {
        public static PolicyException Config(PolicyNode node, string message)
        {
            return new PolicyException(node.Name, "InvalidConfiguration", "<" + node.Name + ">: " + message, node.Where);
        }

        /// <summary>In inbound and backend policies act on the request; in outbound and on-error on the response.</summary>
        public static bool OnRequest(Exec exec)
        {
            return exec.Section == "inbound" || exec.Section == "backend";
        }

        public static string Required(Exec exec, PolicyNode node, string attr)
        {
            if (node.Attribute(attr) == null) throw Config(node, "attribute " + attr + " is required");
            var v = exec.AttrString(node, attr);
            if (v == null) throw Config(node, "attribute " + attr + " evaluated to null");
            return v;
        }

        /// <summary>An attribute whose value may not be an expression (as the policy reference says).</summary>
        public static string LiteralAttr(PolicyNode node, string attr, string dflt = null)
        {
            var a = node.Attribute(attr);
            if (a == null) return dflt;
            if (a.Value.IsExpression) throw Config(node, "attribute " + attr + " does not accept policy expressions");
            return a.Value.Literal;
        }

        public static bool LiteralBool(PolicyNode node, string attr, bool dflt)
        {
            var s = LiteralAttr(node, attr);
            if (s == null) return dflt;
            bool b;
            if (!bool.TryParse(s.Trim(), out b)) throw Config(node, "attribute " + attr + " must be true or false");
            return b;
        }

        /// <summary>Runs work for a child element, attributing an error to that child (its path; Source defaults to the child's name).</summary>
        public static T At<T>(Exec exec, PolicyNode child, Func<T> f, string source = null)
        {
            try { return f(); }
            catch (Exception e) { Pipeline.Mark(e, child, exec, source); throw; }
        }

        public static void At(Exec exec, PolicyNode child, Action f, string source = null)
        {
            try { f(); }
            catch (Exception e) { Pipeline.Mark(e, child, exec, source); throw; }
        }

        /// <summary>The text values of the &lt;value&gt; children (set-header, set-query-parameter, check-header, claim).</summary>
        public static List<string> Values(Exec exec, PolicyNode node, string childName = "value")
        {
            return node.ChildrenNamed(childName).Select(v => exec.EvalString(v.Text, "") ?? "").ToList();
        }

        /// <summary>
        /// set-header / set-query-parameter: exists-action override (default) | skip | append | delete.
        /// </summary>
        public static void ApplyNamed(Exec exec, PolicyNode node, MultiMap target, ISet<string> untouchable)
        {
            var name = Required(exec, node, "name");
            if (name.Length == 0) throw Config(node, "name is empty");
            var action = (exec.AttrString(node, "exists-action", "override") ?? "override").Trim().ToLowerInvariant();
            if (untouchable != null && untouchable.Contains(name))
            {
                exec.Services.Log("<" + node.Name + "> at " + node.Where + ": " + name + " cannot be modified or deleted; ignored (set-header-policy.md)");
                return;
            }
            var values = Values(exec, node);
            switch (action)
            {
                case "override":
                    target.Set(name, values.Count == 0 ? new List<string> { "" } : values);
                    break;
                case "skip":
                    if (!target.Contains(name)) target.Set(name, values.Count == 0 ? new List<string> { "" } : values);
                    break;
                case "append":
                    if (values.Count == 0 && !target.Contains(name)) target.Set(name, new List<string> { "" });
                    foreach (var v in values) target.Add(name, v);
                    break;
                case "delete":
                    target.Remove(name);
                    break;
                default:
                    throw Config(node, "exists-action must be override, skip, append or delete, not \"" + action + "\"");
            }
        }

        public static ResponseState Clone(ResponseState r)
        {
            return new ResponseState
            {
                StatusCode = r.StatusCode,
                StatusReason = r.StatusReason,
                Headers = r.Headers.Clone(),
                Body = r.BufferBody().ToArray(),
            };
        }
    }

    /// <summary>Finds the ResponseState behind an IResponse that send-request stored in a variable (for return-response response-variable-name).</summary>
    public sealed class ResponseRegistry
    {
        private readonly ConditionalWeakTable<object, ResponseState> table = new ConditionalWeakTable<object, ResponseState>();
        public void Remember(object surface, ResponseState state) { if (surface != null) table.Add(surface, state); }
        public ResponseState Find(object surface)
        {
            ResponseState r;
            if (surface == null) return null;
            var direct = surface as ResponseState;
            if (direct != null) return direct;
            return table.TryGetValue(surface, out r) ? r : null;
        }
    }
}
