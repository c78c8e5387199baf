// Policies that change the request or the response: set-status, set-header,
// set-query-parameter, set-body, set-method, set-backend-service, rewrite-uri.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;

namespace Gateway
{
    /// <summary>set-status-policy.md: code and reason of the response (of return-response's response inside it).</summary>
    public sealed class SetStatusPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec) { Apply(node, exec, exec.Response); }

        public static void Apply(PolicyNode node, Exec exec, ResponseState r)
        {
            if (node.Attribute("code") == null) throw P.Config(node, "attribute code is required");
            int code = exec.AttrInt(node, "code");
            if (code < 100 || code > 999) throw P.Config(node, "code " + code + " is not an HTTP status code");
            r.StatusCode = code;
            r.StatusReason = exec.AttrString(node, "reason") ?? Http.Reason(code);
        }
    }

    /// <summary>
    /// set-header-policy.md: on the request in inbound/backend, on the response in outbound/on-error
    /// (and on return-response's or send-request's own message inside them). exists-action
    /// override (default) | skip | append | delete; one &lt;value&gt; per value.
    /// </summary>
    public sealed class SetHeaderPolicy : IPolicy
    {
        /// <summary>"Connection, Content-Length, Keep-Alive, Transfer-Encoding cannot be modified or deleted."</summary>
        public static readonly HashSet<string> Fixed = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
        {
            "Connection", "Content-Length", "Keep-Alive", "Transfer-Encoding",
        };

        public void Execute(PolicyNode node, Exec exec)
        {
            P.ApplyNamed(exec, node, P.OnRequest(exec) ? exec.Request.Headers : exec.Response.Headers, Fixed);
        }
    }

    /// <summary>set-query-parameter-policy.md: the query of the request to the backend; same exists-action as set-header.</summary>
    public sealed class SetQueryParameterPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            if (!P.OnRequest(exec)) throw P.Config(node, "allowed only in inbound and backend");
            P.ApplyNamed(exec, node, exec.Request.Url.Query, null);
        }
    }

    /// <summary>
    /// set-body-policy.md: replaces the request body (inbound/backend) or the response body
    /// (outbound/on-error) with the literal text or the expression's value (string, byte[], JToken,
    /// or anything else via ToString). template="liquid" is not supported locally.
    /// </summary>
    public sealed class SetBodyPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var body = Evaluate(node, exec);
            if (P.OnRequest(exec)) exec.Request.Body = body;
            else
            {
                var r = exec.Response;
                if (r.BodyStream != null) { try { r.BodyStream.Dispose(); } catch (Exception) { } r.BodyStream = null; }
                r.Body = body;
            }
        }

        public static byte[] Evaluate(PolicyNode node, Exec exec)
        {
            var template = node.Attribute("template");
            if (template != null)
            {
                var t = exec.AttrString(node, "template", "");
                if (string.Equals(t, "liquid", StringComparison.OrdinalIgnoreCase))
                    throw new PolicyException(node.Name, "NotSupported",
                        "set-body template=\"liquid\" is not supported by the local gateway; build the body with a policy expression instead", node.Where);
                throw P.Config(node, "template must be \"liquid\", not \"" + t + "\"");
            }
            if (node.Text == null) return new byte[0];
            return Http.ToBytes(exec.Eval(node.Text));
        }
    }

    /// <summary>set-method-policy.md: the request method (or send-request's method inside it).</summary>
    public sealed class SetMethodPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            exec.Request.Method = Evaluate(node, exec);
        }

        public static string Evaluate(PolicyNode node, Exec exec)
        {
            var m = (exec.EvalString(node.Text, "") ?? "").Trim();
            if (m.Length == 0 || !Regex.IsMatch(m, "^[A-Za-z]+$")) throw P.Config(node, "\"" + m + "\" is not an HTTP method");
            return m.ToUpperInvariant();
        }
    }

    /// <summary>set-backend-service-policy.md: base-url replaces the API's service URL; the operation path is appended to it.</summary>
    public sealed class SetBackendServicePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            if (node.Attribute("backend-id") != null)
                throw new PolicyException(node.Name, "NotSupported",
                    "set-backend-service backend-id is not supported by the local gateway (there are no backend entities); use base-url", node.Where);
            var url = P.Required(exec, node, "base-url").Trim();
            Uri u;
            if (!Uri.TryCreate(url, UriKind.Absolute, out u) || (u.Scheme != "http" && u.Scheme != "https"))
                throw P.Config(node, "base-url \"" + url + "\" is not an absolute http(s) URL");
            exec.BackendUrl = url;
        }
    }

    /// <summary>
    /// rewrite-uri-policy.md: the backend path becomes the template (relative to the API's backend
    /// path, i.e. it replaces the operation part), with {param} filled from the matched template
    /// parameters. Query parameters in the template are set; with copy-unmatched-params (default
    /// true) the request's other query parameters are kept.
    /// </summary>
    public sealed class RewriteUriPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var template = P.Required(exec, node, "template").Trim();
            bool copy = exec.AttrBool(node, "copy-unmatched-params", true);
            var filled = Regex.Replace(template, @"\{([^}]+)\}", m =>
            {
                var name = m.Groups[1].Value.TrimStart('*');
                string v;
                if (!exec.Request.MatchedParameters.TryGetValue(name, out v))
                    throw P.Config(node, "template parameter {" + name + "} is not a parameter of the operation's URL template");
                return Http.EscapePath(v);
            });
            int q = filled.IndexOf('?');
            var path = q < 0 ? filled : filled.Substring(0, q);
            var query = q < 0 ? MultiMap.Query() : UrlState.ParseQuery(filled.Substring(q));
            if (!path.StartsWith("/")) path = "/" + path;
            var apiPrefix = exec.Api == null || string.IsNullOrEmpty((exec.Api.Path ?? "").Trim('/')) ? "" : "/" + exec.Api.Path.Trim('/');
            if (copy)
                foreach (var e in exec.Request.Url.Query.Entries)
                    if (!query.Contains(e.Key)) query.Set(e.Key, e.Value);
            exec.Request.Url.Path = apiPrefix + path;
            exec.Request.Url.Query = query;
        }
    }
}
