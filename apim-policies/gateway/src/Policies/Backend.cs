// Policies that call out: forward-request and send-request.
using System;
using System.Collections.Generic;
using System.Linq;

namespace Gateway
{
    public static class Forwarding
    {
        /// <summary>
        /// The backend URL of the current request: the backend base URL (the API's serviceUrl, or what
        /// set-backend-service chose) + the request path after the API path (as rewrite-uri left it) + query.
        /// </summary>
        public static string Url(Exec exec, PolicyNode node)
        {
            var b = (exec.BackendUrl ?? "").Trim();
            if (b.Length == 0)
                throw new PolicyException(node.Name, "InvalidConfiguration",
                    "the API \"" + (exec.Api != null ? exec.Api.Name : "?") + "\" has no serviceUrl and no set-backend-service chose a backend", node.Where);
            var path = exec.Request.Url.Path ?? "/";
            var rest = exec.Api != null ? Router.OperationPath(exec.Api, path) : path;
            if (rest == "/" && !path.EndsWith("/")) rest = "";
            return b.TrimEnd('/') + rest + exec.Request.Url.QueryString;
        }
    }

    /// <summary>
    /// forward-request-policy.md: sends the request to the backend. timeout (seconds, default 300)
    /// or timeout-ms; follow-redirects (default false); buffer-response (default true; "false" hands
    /// the body to the client chunk by chunk, for SSE); fail-on-error-status-code (backend 400-599
    /// goes to on-error). Connection failure: Reason BackendConnectionFailure; timeout: Timeout.
    /// </summary>
    public sealed class ForwardRequestPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            if (exec.Section == "on-error") throw P.Config(node, "forward-request is not allowed in on-error");
            if (node.Attribute("timeout") != null && node.Attribute("timeout-ms") != null)
                throw P.Config(node, "set timeout or timeout-ms, not both");
            int timeoutMs = node.Attribute("timeout-ms") != null
                ? exec.AttrInt(node, "timeout-ms")
                : exec.AttrInt(node, "timeout", 300) * 1000;
            if (timeoutMs < 0) throw P.Config(node, "timeout must not be negative");
            bool buffer = P.LiteralBool(node, "buffer-response", true);
            bool follow = exec.AttrBool(node, "follow-redirects", false);
            bool failOnError = P.LiteralBool(node, "fail-on-error-status-code", false);
            var hv = P.LiteralAttr(node, "http-version", "1");
            if (hv != "1" && hv != "2or1") throw P.Config(node, "http-version=\"" + hv + "\" is not supported locally (HTTP/1.1 only)");

            var headers = exec.Request.Headers.Clone();
            headers.Remove("Host");
            var req = new BackendRequest
            {
                Method = exec.Request.Method,
                Url = Forwarding.Url(exec, node),
                Headers = headers,
                Body = exec.Request.Body,
                TimeoutMs = timeoutMs,
                FollowRedirects = follow,
                Buffer = buffer,
            };
            ResponseState resp;
            try { resp = BackendClient.Send(req); }
            catch (BackendException be) { throw new PolicyException(node.Name, be.Reason, be.Message, node.Where, be); }
            Pipeline.SetResponse(exec, resp);
            exec.Forwarded = true;
            if (failOnError && resp.StatusCode >= 400 && resp.StatusCode <= 599)
                throw new PolicyResponseException(node.Name, "BackendErrorStatusCode",
                    "backend answered " + resp.StatusCode + " and fail-on-error-status-code is true", node.Where, resp);
        }
    }

    /// <summary>
    /// send-request-policy.md: mode new (default; set-url and set-method required) or copy (the
    /// current request's method, URL, headers and body; no body in outbound); children set-url,
    /// set-method, set-header, set-body, authentication-managed-identity. The response (an IResponse)
    /// goes into response-variable-name. timeout seconds, default 60. ignore-error: a failure leaves
    /// the variable null instead of going to on-error.
    /// </summary>
    public sealed class SendRequestPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var mode = (exec.AttrString(node, "mode", "new") ?? "new").Trim().ToLowerInvariant();
            if (mode != "new" && mode != "copy") throw P.Config(node, "mode must be new or copy");
            var varName = P.Required(exec, node, "response-variable-name");
            int timeout = exec.AttrInt(node, "timeout", 60);
            bool ignoreError = P.LiteralBool(node, "ignore-error", false);

            var req = new RequestState();
            string url = null;
            if (mode == "copy")
            {
                req.Method = exec.Request.Method;
                req.Headers = exec.Request.Headers.Clone();
                req.Headers.Remove("Host");
                req.Body = exec.Section == "outbound" ? new byte[0] : (byte[])exec.Request.Body.Clone();
                if (!string.IsNullOrEmpty(exec.BackendUrl)) url = Forwarding.Url(exec, node);
            }
            bool methodSet = mode == "copy";
            foreach (var c in node.Children)
            {
                var child = c;
                switch (c.Name)
                {
                    case "set-url":
                        url = P.At(exec, child, () => (exec.EvalString(child.Text, "") ?? "").Trim());
                        break;
                    case "set-method":
                        req.Method = P.At(exec, child, () => SetMethodPolicy.Evaluate(child, exec));
                        methodSet = true;
                        break;
                    case "set-header":
                        P.At(exec, child, () => P.ApplyNamed(exec, child, req.Headers, SetHeaderPolicy.Fixed));
                        break;
                    case "set-body":
                        P.At(exec, child, () => { req.Body = SetBodyPolicy.Evaluate(child, exec); });
                        break;
                    case "authentication-managed-identity":
                        P.At(exec, child, () => AuthenticationManagedIdentityPolicy.Apply(child, exec, req.Headers));
                        break;
                    default:
                        throw P.Config(node, "<" + c.Name + "> is not supported inside <send-request> by the local gateway");
                }
            }
            if (string.IsNullOrEmpty(url)) throw P.Config(node, "<set-url> is required (mode=\"new\")");
            if (!methodSet) throw P.Config(node, "<set-method> is required (mode=\"new\")");

            var breq = new BackendRequest
            {
                Method = req.Method,
                Url = url,
                Headers = req.Headers,
                Body = req.Body,
                TimeoutMs = Math.Max(0, timeout) * 1000,
                FollowRedirects = false,
                Buffer = true,
            };
            try
            {
                var resp = BackendClient.Send(breq);
                var surface = ContextSurface.ResponseFrom(resp);
                exec.Services.Responses.Remember(surface, resp);
                exec.Variables[varName] = surface;
            }
            catch (BackendException be)
            {
                if (ignoreError)
                {
                    exec.Services.Log("send-request to " + SafeUrl(url) + " failed (ignore-error): " + be.Message);
                    exec.Variables[varName] = null;
                    return;
                }
                throw new PolicyException(node.Name, be.Reason, be.Message, node.Where, be);
            }
        }

        /// <summary>The URL without its query (queries of OAuth calls may carry codes).</summary>
        public static string SafeUrl(string url)
        {
            int q = url.IndexOf('?');
            return q < 0 ? url : url.Substring(0, q);
        }
    }
}
