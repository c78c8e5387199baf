// Validation of policy documents against what the local gateway implements,
// with APIM's rules for each element: attributes (required, allowed literal
// values, whether an expression may be used), text content, child elements
// and the sections a policy may be used in. Sources: shared/reference/apim/
// policies.json (docs) and the XSDs of microsoft/vscode-apimanagement.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text.RegularExpressions;

namespace Gateway
{
    public static class Schema
    {
        // ---- specification model ----

        internal enum Kind { Any, NonEmpty, Int, PositiveInt, Bool, Enum, AbsoluteUrl, Method, MethodOrStar, StatusCode, Origin }

        internal sealed class AttrSpec
        {
            public string Name;
            public bool Required;
            /// <summary>May the value be a policy expression?</summary>
            public bool Expr = true;
            public Kind Kind = Kind.Any;
            public string[] Values;
            public int Min = int.MinValue, Max = int.MaxValue;
        }

        internal sealed class ChildRule
        {
            public ElemSpec Spec;
            public int Min, Max;
        }

        internal enum TextRule { None, Optional, Required }

        internal sealed class ElemSpec
        {
            public string Name;
            /// <summary>Sections a policy may be used in; null for a sub-element.</summary>
            public string[] Sections;
            public readonly List<AttrSpec> Attrs = new List<AttrSpec>();
            public TextRule Text = TextRule.None;
            public bool TextExpr = true;
            public Kind TextKind = Kind.Any;
            public readonly List<ChildRule> Children = new List<ChildRule>();
            /// <summary>The children are policies (when, otherwise).</summary>
            public bool PolicyList;
            /// <summary>Checks across attributes and children.</summary>
            public Action<PolicyNode, Ctx> Extra;
            public bool IsPolicy { get { return Sections != null; } }

            public ElemSpec A(string name, bool required = false, bool expr = true, Kind kind = Kind.Any, string[] values = null, int min = int.MinValue, int max = int.MaxValue)
            {
                Attrs.Add(new AttrSpec { Name = name, Required = required, Expr = expr, Kind = values != null ? Kind.Enum : kind, Values = values, Min = min, Max = max });
                return this;
            }
            public ElemSpec C(ElemSpec child, int min = 0, int max = int.MaxValue)
            {
                Children.Add(new ChildRule { Spec = child, Min = min, Max = max });
                return this;
            }
            public ElemSpec T(TextRule rule, bool expr = true, Kind kind = Kind.Any)
            {
                Text = rule; TextExpr = expr; TextKind = kind;
                return this;
            }
            public ElemSpec X(Action<PolicyNode, Ctx> extra) { Extra += extra; return this; }
        }

        internal sealed class Ctx
        {
            public Bundle Bundle;
            public List<Problem> Problems;
            /// <summary>Section being validated; null inside a fragment (checked per include).</summary>
            public string Section;
            public PolicyDocument Doc;
            public bool InFragment;
            public void Report(SourceRef where, string msg) { Problems.Add(new Problem(where, msg)); }
        }

        private static readonly string[] All = { "inbound", "backend", "outbound", "on-error" };
        private static readonly string[] Bools = { "true", "false" };
        private static readonly string[] CachingTypes = { "prefer-external", "external", "internal" };
        private static readonly string[] ExistsActions = { "override", "skip", "append", "delete" };

        private static ElemSpec P(string name, params string[] sections) { return new ElemSpec { Name = name, Sections = sections }; }
        private static ElemSpec E(string name) { return new ElemSpec { Name = name }; }

        /// <summary>Policies the local gateway implements, by element name.</summary>
        internal static readonly Dictionary<string, ElemSpec> Policies = BuildPolicies();

        /// <summary>Policy names APIM knows but the local gateway does not implement.</summary>
        public static readonly HashSet<string> KnownApimPolicies = new HashSet<string>(StringComparer.Ordinal)
        {
            "authentication-basic", "authentication-certificate", "authentication-token", "authentication-token-store",
            "azure-openai-emit-token-metric", "azure-openai-semantic-cache-lookup", "azure-openai-semantic-cache-store",
            "azure-openai-token-limit", "llm-emit-token-metric", "llm-semantic-cache-lookup", "llm-semantic-cache-store",
            "llm-token-limit", "llm-content-safety", "cache-lookup", "cache-store", "cross-domain", "emit-metric",
            "find-and-replace", "get-authorization-context", "invoke-dapr-binding", "ip-filter", "json-to-xml", "jsonp",
            "limit-concurrency", "log-to-eventhub", "mock-response", "proxy", "publish-to-dapr", "quota", "quota-by-key",
            "rate-limit", "redirect-content-urls", "retry", "send-one-way-request", "set-request-metric-dimension-value",
            "validate-azure-ad-token", "validate-client-certificate", "validate-content", "validate-graphql-request",
            "validate-headers", "validate-odata-request", "validate-parameters", "validate-status-code", "wait", "xml-to-json",
            "xsl-transform", "set-graphql-resolver", "http-data-source", "cosmosdb-data-source", "sql-data-source", "publish-event",
            "invoke-request", "block"
        };

        private static Dictionary<string, ElemSpec> BuildPolicies()
        {
            var d = new Dictionary<string, ElemSpec>(StringComparer.Ordinal);
            Action<ElemSpec> add = s => d[s.Name] = s;

            add(P("base", All).X(CheckBase));

            add(P("set-variable", All)
                .A("name", required: true, expr: false, kind: Kind.NonEmpty)
                .A("value", required: true));

            var when = E("when").A("condition", required: true, kind: Kind.Bool);
            when.PolicyList = true;
            var otherwise = E("otherwise");
            otherwise.PolicyList = true;
            add(P("choose", All).C(when, 1).C(otherwise, 0, 1).X(CheckChoose));

            var setStatus = P("set-status", All)
                .A("code", required: true, kind: Kind.StatusCode)
                .A("reason", required: true);
            add(setStatus);

            var headerValue = E("value").T(TextRule.Optional);
            var setHeader = P("set-header", All)
                .A("name", required: true, kind: Kind.NonEmpty)
                .A("exists-action", values: ExistsActions)
                .C(headerValue);
            add(setHeader);

            add(P("set-query-parameter", "inbound", "backend")
                .A("name", required: true, kind: Kind.NonEmpty)
                .A("exists-action", values: ExistsActions)
                .C(E("value").T(TextRule.Optional))
                .X(CheckQueryParameterValues));

            var setBody = P("set-body", "inbound", "outbound", "backend")
                .A("template", expr: false, values: new[] { "liquid", "none" })
                .A("xsi-nil", expr: false, values: new[] { "blank", "null" })
                .A("parse-date", expr: false, values: Bools)
                .T(TextRule.Optional)
                .X(CheckSetBody);
            add(setBody);

            add(P("set-method", "inbound", "on-error").T(TextRule.Required, kind: Kind.Method));

            add(P("set-backend-service", "inbound", "backend")
                .A("base-url", kind: Kind.AbsoluteUrl)
                .X(CheckSetBackendService));

            add(P("rewrite-uri", "inbound")
                .A("template", required: true, kind: Kind.NonEmpty)
                .A("copy-unmatched-params", values: Bools)
                .X(CheckRewriteUri));

            add(P("forward-request", "backend")
                .A("timeout", kind: Kind.Int, min: 0)
                .A("timeout-ms", kind: Kind.Int, min: 0)
                .A("continue-timeout", kind: Kind.Int, min: 0)
                .A("http-version", expr: false, values: new[] { "1", "2or1", "2" })
                .A("follow-redirects", values: Bools)
                .A("buffer-request-body", expr: false, values: Bools)
                .A("buffer-response", expr: false, values: Bools)
                .A("fail-on-error-status-code", expr: false, values: Bools)
                .X(CheckForwardRequest));

            var ami = P("authentication-managed-identity", "inbound")
                .A("resource", required: true, kind: Kind.NonEmpty)
                .A("client-id", expr: false)
                .A("output-token-variable-name", expr: false, kind: Kind.NonEmpty)
                .A("ignore-error", expr: false, values: Bools);
            add(ami);

            add(P("send-request", All)
                .A("mode", values: new[] { "new", "copy" })
                .A("response-variable-name", required: true, kind: Kind.NonEmpty)
                .A("timeout", kind: Kind.Int, min: 0)
                .A("ignore-error", expr: false, values: Bools)
                .C(E("set-url").T(TextRule.Required, kind: Kind.AbsoluteUrl), 0, 1)
                .C(E("set-method").T(TextRule.Required, expr: false, kind: Kind.Method), 0, 1)
                .C(setHeader, 0)
                .C(setBody, 0, 1)
                .C(ami, 0, 1)
                .X(CheckSendRequest));

            add(P("return-response", All)
                .A("response-variable-name", expr: false, kind: Kind.NonEmpty)
                .C(setStatus, 0, 1)
                .C(setHeader, 0)
                .C(setBody, 0, 1));

            add(P("cache-store-value", All)
                .A("caching-type", expr: false, values: CachingTypes)
                .A("duration", required: true, kind: Kind.Int, min: 0)
                .A("key", required: true, kind: Kind.NonEmpty)
                .A("value", required: true));
            add(P("cache-lookup-value", All)
                .A("caching-type", expr: false, values: CachingTypes)
                .A("default-value")
                .A("key", required: true, kind: Kind.NonEmpty)
                .A("variable-name", required: true, expr: false, kind: Kind.NonEmpty));
            add(P("cache-remove-value", All)
                .A("caching-type", expr: false, values: CachingTypes)
                .A("key", required: true, kind: Kind.NonEmpty));

            var key = E("key")
                .A("id")
                .A("certificate-id")
                .A("n", expr: false, kind: Kind.NonEmpty)
                .A("e", expr: false, kind: Kind.NonEmpty)
                .T(TextRule.Optional)
                .X(CheckSigningKey);
            var claim = E("claim")
                .A("name", required: true, kind: Kind.NonEmpty)
                .A("match", values: new[] { "all", "any" })
                .A("separator")
                .C(E("value").T(TextRule.Optional));
            add(P("validate-jwt", "inbound")
                .A("header-name", kind: Kind.NonEmpty)
                .A("query-parameter-name", kind: Kind.NonEmpty)
                .A("token-value")
                .A("failed-validation-httpcode", kind: Kind.StatusCode)
                .A("failed-validation-error-message")
                .A("require-expiration-time", kind: Kind.Bool)
                .A("require-scheme")
                .A("require-signed-tokens", kind: Kind.Bool)
                .A("clock-skew", kind: Kind.Int, min: 0)
                .A("output-token-variable-name", expr: false, kind: Kind.NonEmpty)
                .C(E("openid-config").A("url", required: true, kind: Kind.AbsoluteUrl))
                .C(E("issuer-signing-keys").C(key), 0, 1)
                .C(E("decryption-keys").X(Unsupported("decryption-keys (encrypted tokens)")), 0, 1)
                .C(E("audiences").C(E("audience").T(TextRule.Required), 1), 0, 1)
                .C(E("issuers").C(E("issuer").T(TextRule.Required), 1), 0, 1)
                .C(E("required-claims").C(claim), 0, 1)
                .X(CheckValidateJwt));

            var origin = E("origin").T(TextRule.Required, kind: Kind.Origin);
            add(P("cors", "inbound")
                .A("allow-credentials", kind: Kind.Bool)
                .A("terminate-unmatched-request", kind: Kind.Bool)
                .C(E("allowed-origins").C(origin, 1), 1, 1)
                .C(E("allowed-methods").A("preflight-result-max-age", kind: Kind.Int, min: 0)
                    .C(E("method").T(TextRule.Required, kind: Kind.MethodOrStar), 1), 0, 1)
                .C(E("allowed-headers").C(E("header").T(TextRule.Required, kind: Kind.NonEmpty), 1), 1, 1)
                .C(E("expose-headers").C(E("header").T(TextRule.Required, kind: Kind.NonEmpty), 1), 0, 1)
                .X(CheckCors));

            add(P("rate-limit-by-key", "inbound")
                .A("calls", required: true, kind: Kind.PositiveInt)
                .A("renewal-period", required: true, kind: Kind.PositiveInt, max: 300)
                .A("counter-key", required: true, kind: Kind.NonEmpty)
                .A("increment-condition", kind: Kind.Bool)
                .A("increment-count", kind: Kind.Int, min: 0)
                .A("retry-after-header-name", expr: false, kind: Kind.NonEmpty)
                .A("retry-after-variable-name", expr: false, kind: Kind.NonEmpty)
                .A("remaining-calls-header-name", expr: false, kind: Kind.NonEmpty)
                .A("remaining-calls-variable-name", expr: false, kind: Kind.NonEmpty)
                .A("total-calls-header-name", expr: false, kind: Kind.NonEmpty));

            add(P("check-header", "inbound")
                .A("name", required: true, kind: Kind.NonEmpty)
                .A("failed-check-httpcode", required: true, kind: Kind.StatusCode)
                .A("failed-check-error-message", required: true)
                .A("ignore-case", required: true, kind: Kind.Bool)
                .C(E("value").T(TextRule.Optional)));

            add(P("include-fragment", All)
                .A("fragment-id", required: true, expr: false, kind: Kind.NonEmpty)
                .X(CheckIncludeFragment));

            // The trace page lists inbound, outbound, backend; the 2020 on-error list and the policy
            // toolkit also allow it in on-error, so it is accepted there too.
            add(P("trace", All)
                .A("source", required: true, expr: false, kind: Kind.NonEmpty)
                .A("severity", expr: false, values: new[] { "verbose", "information", "error" })
                .C(E("message").T(TextRule.Required), 1, 1)
                .C(E("metadata").A("name", required: true, kind: Kind.NonEmpty).A("value", required: true)));

            return d;
        }

        // ---- entry point ----

        /// <summary>Validates every document of the bundle; problems name file and line.</summary>
        public static void Validate(Bundle b, List<Problem> problems)
        {
            if (b == null) return;
            try
            {
                ValidateCore(b, problems);
            }
            catch (Exception e)
            {
                problems.Add(new Problem(null, "internal error while validating the policies: " + e.Message));
            }
        }

        private static void ValidateCore(Bundle b, List<Problem> problems)
        {
            var seen = new HashSet<PolicyDocument>();
            var sink = new List<Problem>();
            Action<PolicyDocument> doc = d =>
            {
                if (d == null || !seen.Add(d)) return;
                foreach (var kv in d.Sections)
                {
                    var ctx = new Ctx { Bundle = b, Problems = sink, Section = kv.Key, Doc = d };
                    ValidateList(kv.Value.Children, ctx);
                    foreach (var extra in kv.Value.ChildrenNamed("base").Skip(1))
                        sink.Add(new Problem(extra.Where, "<base/> may appear only once in <" + kv.Key + ">"));
                }
            };
            doc(b.Global);
            foreach (var api in b.Apis)
            {
                doc(api.Policy);
                foreach (var op in api.Operations) doc(op.Policy);
            }
            foreach (var f in b.Fragments)
            {
                if (f.Value == null || f.Value.Root == null) continue;
                var ctx = new Ctx { Bundle = b, Problems = sink, Section = null, Doc = f.Value, InFragment = true };
                ValidateList(f.Value.Root.Children, ctx);
            }
            // one report per distinct problem (a fragment included from several places)
            var keys = new HashSet<string>();
            foreach (var p in sink)
                if (keys.Add(p.ToString())) problems.Add(p);
        }

        private static void ValidateList(IEnumerable<PolicyNode> nodes, Ctx ctx)
        {
            foreach (var n in nodes) ValidatePolicy(n, ctx);
        }

        private static void ValidatePolicy(PolicyNode n, Ctx ctx)
        {
            ElemSpec spec;
            if (!Policies.TryGetValue(n.Name, out spec))
            {
                if (KnownApimPolicies.Contains(n.Name))
                    ctx.Report(n.Where, "<" + n.Name + "> is an APIM policy that the local gateway does not implement");
                else if (RawXml.SectionNames.Contains(n.Name))
                    ctx.Report(n.Where, "<" + n.Name + "> is a section and cannot be nested inside " + (ctx.Section != null ? "<" + ctx.Section + ">" : "a fragment"));
                else
                    ctx.Report(n.Where, "unknown policy element <" + n.Name + ">");
                return;
            }
            if (ctx.Section != null && !spec.Sections.Contains(ctx.Section))
                ctx.Report(n.Where, "<" + n.Name + "> is not allowed in the " + ctx.Section + " section (APIM allows it in: " + string.Join(", ", spec.Sections) + ")");
            ValidateElement(n, spec, ctx);
        }

        private static void ValidateElement(PolicyNode n, ElemSpec spec, Ctx ctx)
        {
            // attributes
            foreach (var a in n.Attributes)
            {
                if (spec.IsPolicy && a.Name == "id")
                {
                    if (a.Value.IsExpression) ctx.Report(a.Where, "attribute 'id' of <" + n.Name + "> cannot be a policy expression");
                    continue;
                }
                var asp = spec.Attrs.FirstOrDefault(x => x.Name == a.Name);
                if (asp == null)
                {
                    var known = spec.Attrs.Select(x => x.Name).ToList();
                    if (spec.IsPolicy) known.Add("id");
                    ctx.Report(a.Where, "unknown attribute '" + a.Name + "' on <" + n.Name + ">"
                        + (known.Count > 0 ? " (allowed: " + string.Join(", ", known) + ")" : " (it takes no attributes)"));
                    continue;
                }
                CheckValue(a.Value, asp.Expr, asp.Kind, asp.Values, asp.Min, asp.Max, "attribute '" + a.Name + "' of <" + n.Name + ">", ctx);
            }
            foreach (var asp in spec.Attrs)
                if (asp.Required && n.Attribute(asp.Name) == null)
                    ctx.Report(n.Where, "<" + n.Name + "> requires the attribute '" + asp.Name + "'");

            // text
            if (n.Text != null && spec.Text == TextRule.None)
                ctx.Report(n.Text.Where, "<" + n.Name + "> does not take text content");
            else if (n.Text == null && spec.Text == TextRule.Required)
                ctx.Report(n.Where, "<" + n.Name + "> requires a value as its text");
            else if (n.Text != null)
                CheckValue(n.Text, spec.TextExpr, spec.TextKind, null, int.MinValue, int.MaxValue, "the text of <" + n.Name + ">", ctx);

            // children
            if (spec.PolicyList)
                ValidateList(n.Children, ctx);
            else
            {
                var counts = new Dictionary<string, int>();
                foreach (var c in n.Children)
                {
                    var rule = spec.Children.FirstOrDefault(r => r.Spec.Name == c.Name);
                    if (rule == null)
                    {
                        ctx.Report(c.Where, "<" + c.Name + "> is not allowed inside <" + n.Name + ">"
                            + (spec.Children.Count > 0 ? " (allowed: " + string.Join(", ", spec.Children.Select(r => "<" + r.Spec.Name + ">")) + ")" : ""));
                        continue;
                    }
                    int k;
                    counts.TryGetValue(c.Name, out k);
                    counts[c.Name] = ++k;
                    if (k == rule.Max + 1)
                        ctx.Report(c.Where, "<" + n.Name + "> may contain at most " + rule.Max + " <" + c.Name + ">");
                    ValidateElement(c, rule.Spec, ctx);
                }
                foreach (var rule in spec.Children)
                {
                    int k;
                    counts.TryGetValue(rule.Spec.Name, out k);
                    if (k < rule.Min)
                        ctx.Report(n.Where, "<" + n.Name + "> requires " + (rule.Min == 1 ? "a" : "at least " + rule.Min) + " <" + rule.Spec.Name + "> element");
                }
            }
            if (spec.Extra != null) spec.Extra(n, ctx);
        }

        private static void CheckValue(Value v, bool exprAllowed, Kind kind, string[] values, int min, int max, string what, Ctx ctx)
        {
            if (v == null) return;
            if (v.IsExpression)
            {
                if (!exprAllowed) ctx.Report(v.Where, what + " cannot be a policy expression");
                return;
            }
            string s = v.Literal ?? "";
            string err = LiteralError(s, kind, values, min, max, exprAllowed);
            if (err != null) ctx.Report(v.Where, what + " " + err);
        }

        private static readonly Regex MethodToken = new Regex(@"^[A-Z]+$");

        private static string LiteralError(string s, Kind kind, string[] values, int min, int max, bool exprAllowed)
        {
            string orExpr = exprAllowed ? " or a policy expression" : "";
            switch (kind)
            {
                case Kind.Any: return null;
                case Kind.NonEmpty:
                    return s.Trim().Length == 0 ? "must not be empty" : null;
                case Kind.Enum:
                    return values.Contains(s) ? null : "has the value \"" + s + "\"; allowed: " + string.Join(", ", values.Select(x => "\"" + x + "\"")) + orExpr;
                case Kind.Bool:
                    return s == "true" || s == "false" ? null : "must be true or false" + orExpr + ", not \"" + s + "\"";
                case Kind.Int:
                case Kind.PositiveInt:
                case Kind.StatusCode:
                {
                    long n;
                    if (!long.TryParse(s.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out n))
                        return "must be an integer" + orExpr + ", not \"" + s + "\"";
                    if (kind == Kind.PositiveInt && n < 1) return "must be at least 1, not " + n;
                    if (kind == Kind.StatusCode && (n < 100 || n > 599)) return "must be an HTTP status code (100-599), not " + n;
                    if (n < min) return "must be at least " + min + ", not " + n;
                    if (n > max) return "must be at most " + max + ", not " + n;
                    return null;
                }
                case Kind.AbsoluteUrl:
                {
                    Uri u;
                    return Uri.TryCreate(s.Trim(), UriKind.Absolute, out u) && (u.Scheme == "http" || u.Scheme == "https")
                        ? null : "must be an absolute http or https URL, not \"" + s + "\"";
                }
                case Kind.Method:
                    return MethodToken.IsMatch(s.Trim()) ? null : "must be an upper-case HTTP method such as GET or POST, not \"" + s + "\"";
                case Kind.MethodOrStar:
                    return MethodToken.IsMatch(s.Trim()) || s.Trim() == "*" ? null : "must be an upper-case HTTP method such as GET or POST, or \"*\", not \"" + s + "\"";
                case Kind.Origin:
                {
                    if (s == "*") return null;
                    Uri u;
                    if (Uri.TryCreate(s, UriKind.Absolute, out u) && (u.Scheme == "http" || u.Scheme == "https")
                        && (u.AbsolutePath == "/" && !s.EndsWith("/")) && u.Query == "" && u.Fragment == "")
                        return null;
                    return "must be \"*\" or an origin scheme://host[:port] (no path or trailing '/'), not \"" + s + "\"";
                }
            }
            return null;
        }

        // ---- cross-checks ----

        private static Action<PolicyNode, Ctx> Unsupported(string what)
        {
            return (n, ctx) => ctx.Report(n.Where, "<" + n.Name + "> is valid in APIM, but the local gateway does not support " + what);
        }

        private static bool IsLiteral(PolicyNode n, string attr, string value)
        {
            var a = n.Attribute(attr);
            return a != null && !a.Value.IsExpression && a.Value.Literal == value;
        }

        private static void CheckBase(PolicyNode n, Ctx ctx)
        {
            if (ctx.InFragment)
                ctx.Report(n.Where, "a policy fragment cannot contain <base/>");
        }

        private static void CheckChoose(PolicyNode n, Ctx ctx)
        {
            bool sawOtherwise = false;
            foreach (var c in n.Children)
            {
                if (c.Name == "otherwise") sawOtherwise = true;
                else if (c.Name == "when" && sawOtherwise)
                    ctx.Report(c.Where, "<when> must come before <otherwise> in <choose>");
            }
        }

        private static void CheckQueryParameterValues(PolicyNode n, Ctx ctx)
        {
            if (!n.ChildrenNamed("value").Any() && !IsLiteral(n, "exists-action", "delete"))
                ctx.Report(n.Where, "<set-query-parameter> requires at least one <value> (unless exists-action=\"delete\")");
        }

        private static void CheckSetBody(PolicyNode n, Ctx ctx)
        {
            var t = n.Attribute("template");
            if (t != null && !t.Value.IsExpression && t.Value.Literal == "liquid")
                ctx.Report(t.Where, "<set-body template=\"liquid\"> is valid in APIM, but the local gateway does not support Liquid templates; build the body with a policy expression");
        }

        private static void CheckSetBackendService(PolicyNode n, Ctx ctx)
        {
            if (n.Attribute("base-url") == null)
                ctx.Report(n.Where, "<set-backend-service> requires 'base-url' (backend-id, Service Fabric and Dapr backends are not supported by the local gateway)");
        }

        private static void CheckRewriteUri(PolicyNode n, Ctx ctx)
        {
            var t = n.Attribute("template");
            if (t != null && !t.Value.IsExpression && t.Value.Literal.Length > 0 && !t.Value.Literal.StartsWith("/"))
                ctx.Report(t.Where, "attribute 'template' of <rewrite-uri> must start with '/'");
        }

        private static void CheckForwardRequest(PolicyNode n, Ctx ctx)
        {
            if (n.Attribute("timeout") != null && n.Attribute("timeout-ms") != null)
                ctx.Report(n.Where, "<forward-request> cannot have both 'timeout' and 'timeout-ms'");
        }

        private static void CheckSendRequest(PolicyNode n, Ctx ctx)
        {
            var mode = n.Attribute("mode");
            bool isNew = mode == null || (!mode.Value.IsExpression && mode.Value.Literal == "new");
            if (isNew)
            {
                if (!n.ChildrenNamed("set-url").Any())
                    ctx.Report(n.Where, "<send-request> with mode=\"new\" requires <set-url>");
                if (!n.ChildrenNamed("set-method").Any())
                    ctx.Report(n.Where, "<send-request> with mode=\"new\" requires <set-method>");
            }
        }

        private static void CheckSigningKey(PolicyNode n, Ctx ctx)
        {
            bool hasN = n.Attribute("n") != null, hasE = n.Attribute("e") != null;
            bool hasCert = n.Attribute("certificate-id") != null, hasText = n.Text != null;
            if (hasN != hasE)
                ctx.Report(n.Where, "<key> needs both 'n' and 'e' for an RSA key");
            int kinds = (hasN || hasE ? 1 : 0) + (hasCert ? 1 : 0) + (hasText ? 1 : 0);
            if (kinds == 0)
                ctx.Report(n.Where, "<key> needs a base64 key as its text, 'n' and 'e', or 'certificate-id'");
            else if (kinds > 1)
                ctx.Report(n.Where, "<key> must give exactly one of: base64 text, 'n' and 'e', 'certificate-id'");
            // Valid in APIM, but there are no certificates here: say so now
            // rather than at the first request.
            if (hasCert)
                ctx.Report(n.Attribute("certificate-id").Where, "valid in APIM, but the local gateway has no certificates: give the key as 'n' and 'e' instead of 'certificate-id'");
            if (hasText && !n.Text.IsExpression)
            {
                try { Convert.FromBase64String(n.Text.Literal.Trim()); }
                catch (FormatException) { ctx.Report(n.Text.Where, "the text of <key> must be a base64 symmetric key"); }
            }
        }

        private static void CheckValidateJwt(PolicyNode n, Ctx ctx)
        {
            int sources = new[] { "header-name", "query-parameter-name", "token-value" }.Count(a => n.Attribute(a) != null);
            if (sources == 0)
                ctx.Report(n.Where, "<validate-jwt> requires one of 'header-name', 'query-parameter-name' or 'token-value'");
            else if (sources > 1)
                ctx.Report(n.Where, "<validate-jwt> takes only one of 'header-name', 'query-parameter-name' and 'token-value'");
        }

        private static void CheckCors(PolicyNode n, Ctx ctx)
        {
            if (!IsLiteral(n, "allow-credentials", "true")) return;
            foreach (var o in n.ChildrenNamed("allowed-origins").SelectMany(x => x.ChildrenNamed("origin")))
                if (o.Text != null && !o.Text.IsExpression && o.Text.Literal == "*")
                    ctx.Report(o.Where, "<cors allow-credentials=\"true\"> cannot allow the origin \"*\"; list the origins");
        }

        private static void CheckIncludeFragment(PolicyNode n, Ctx ctx)
        {
            if (ctx.InFragment)
            {
                ctx.Report(n.Where, "a policy fragment cannot include another fragment");
                return;
            }
            var a = n.Attribute("fragment-id");
            if (a == null || a.Value.IsExpression) return;
            PolicyDocument frag;
            if (!ctx.Bundle.Fragments.TryGetValue(a.Value.Literal, out frag))
            {
                // Listed in the manifest, but its file could not be read or parsed: that is reported
                // at the fragment file (or the manifest), and serve attributes it to this include.
                if (ctx.Bundle.FragmentFiles.ContainsKey(a.Value.Literal)) return;
                ctx.Report(a.Where, "unknown policy fragment \"" + a.Value.Literal + "\" (the manifest's \"fragments\" has: "
                    + (ctx.Bundle.Fragments.Count == 0 ? "none" : string.Join(", ", ctx.Bundle.Fragments.Keys)) + ")");
                return;
            }
            if (ctx.Section != null && frag != null && frag.Root != null)
                CheckFragmentSections(frag.Root.Children, ctx.Section, a.Value.Literal, n.Where, ctx);
        }

        /// <summary>The fragment's policies must be allowed where it is included.</summary>
        private static void CheckFragmentSections(IEnumerable<PolicyNode> nodes, string section, string id, SourceRef includedAt, Ctx ctx)
        {
            foreach (var c in nodes)
            {
                ElemSpec spec;
                if (!Policies.TryGetValue(c.Name, out spec)) continue; // reported when the fragment itself is validated
                if (!spec.Sections.Contains(section))
                    ctx.Report(c.Where, "<" + c.Name + "> is not allowed in the " + section + " section, where fragment \"" + id
                        + "\" is included (" + includedAt + "); APIM allows it in: " + string.Join(", ", spec.Sections));
                if (c.Name == "choose")
                    foreach (var branch in c.Children) CheckFragmentSections(branch.Children, section, id, includedAt, ctx);
            }
        }
    }
}
