// Access restriction policies: cors, rate-limit-by-key, check-header.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;

namespace Gateway
{
    /// <summary>
    /// cors-policy.md. Preflight (OPTIONS with Origin and Access-Control-Request-Method, no OPTIONS
    /// operation): answered directly by the first matching cors of the effective inbound section
    /// (Pipeline.ExecutePreflight): 200 with Access-Control-Allow-Origin/-Methods/-Headers/-Credentials
    /// and -Max-Age (when preflight-result-max-age &gt; 0); unmatched: an empty 200 when
    /// terminate-unmatched-request (default true), else the next cors is tried. Actual requests with
    /// a matching Origin get Access-Control-Allow-Origin (+ -Credentials, -Expose-Headers, Vary: Origin)
    /// on the response once outbound completes; unmatched GET/HEAD with terminate-unmatched-request
    /// are answered with an empty 200; other unmatched requests go on without CORS headers.
    /// allowed-methods absent means GET and POST.
    /// </summary>
    public sealed class CorsPolicy : IPolicy
    {
        private sealed class Settings
        {
            public bool Credentials, Terminate, AnyOrigin, AnyMethod, AnyHeader;
            public List<string> Origins, Methods, Headers, Expose;
            public int MaxAge;
        }

        private static Settings Read(PolicyNode node, Exec exec)
        {
            var s = new Settings
            {
                Credentials = exec.AttrBool(node, "allow-credentials", false),
                Terminate = exec.AttrBool(node, "terminate-unmatched-request", true),
            };
            var origins = node.ChildrenNamed("allowed-origins").FirstOrDefault();
            if (origins == null) throw P.Config(node, "<allowed-origins> is required");
            s.Origins = P.Values(exec, origins, "origin").Select(o => o.Trim()).ToList();
            s.AnyOrigin = s.Origins.Contains("*");
            if (s.AnyOrigin && s.Credentials)
                throw P.Config(node, "allow-credentials=\"true\" cannot be combined with the wildcard origin *");
            var methods = node.ChildrenNamed("allowed-methods").FirstOrDefault();
            s.Methods = methods == null ? new List<string> { "GET", "POST" } : P.Values(exec, methods, "method").Select(m => m.Trim().ToUpperInvariant()).ToList();
            s.AnyMethod = s.Methods.Contains("*");
            s.MaxAge = methods == null ? 0 : exec.AttrInt(methods, "preflight-result-max-age", 0);
            var headers = node.ChildrenNamed("allowed-headers").FirstOrDefault();
            s.Headers = headers == null ? new List<string>() : P.Values(exec, headers, "header").Select(h => h.Trim()).ToList();
            s.AnyHeader = s.Headers.Contains("*");
            var expose = node.ChildrenNamed("expose-headers").FirstOrDefault();
            s.Expose = expose == null ? new List<string>() : P.Values(exec, expose, "header").Select(h => h.Trim()).ToList();
            return s;
        }

        private static bool OriginAllowed(Settings s, string origin)
        {
            return s.AnyOrigin || s.Origins.Any(o => string.Equals(o, origin, StringComparison.OrdinalIgnoreCase));
        }

        private static void AllowOrigin(Settings s, ResponseState r, string origin)
        {
            if (s.AnyOrigin) r.Headers.Set("Access-Control-Allow-Origin", "*");
            else
            {
                r.Headers.Set("Access-Control-Allow-Origin", origin);
                var vary = r.Headers.Joined("Vary");
                if (vary == null) r.Headers.Set("Vary", "Origin");
                else if (!vary.Split(',').Any(v => v.Trim().Equals("Origin", StringComparison.OrdinalIgnoreCase) || v.Trim() == "*"))
                    r.Headers.Set("Vary", vary + ", Origin");
            }
            if (s.Credentials) r.Headers.Set("Access-Control-Allow-Credentials", "true");
        }

        public void Execute(PolicyNode node, Exec exec)
        {
            if (exec.Section != "inbound") throw P.Config(node, "cors is allowed only in inbound");
            var st = ExecState.Of(exec);
            if (st.CorsHandled) return;
            var origin = exec.Request.Headers.Joined("Origin");
            if (origin == null) return;
            var s = Read(node, exec);
            if (OriginAllowed(s, origin))
            {
                st.CorsHandled = true;
                st.ResponseHooks.Add(() =>
                {
                    AllowOrigin(s, exec.Response, origin);
                    if (s.Expose.Count > 0) exec.Response.Headers.Set("Access-Control-Expose-Headers", string.Join(",", s.Expose));
                });
                return;
            }
            if (!s.Terminate) return;
            st.CorsHandled = true;
            var m = exec.Request.Method;
            if (m == "GET" || m == "HEAD")
            {
                Pipeline.SetResponse(exec, new ResponseState());
                exec.Ended = true;
            }
        }

        /// <summary>Answers a preflight; false when unmatched and terminate-unmatched-request is false.</summary>
        public static bool Preflight(PolicyNode node, Exec exec)
        {
            var s = Read(node, exec);
            var origin = exec.Request.Headers.Joined("Origin") ?? "";
            var method = (exec.Request.Headers.Joined("Access-Control-Request-Method") ?? "").Trim().ToUpperInvariant();
            var requested = (exec.Request.Headers.Joined("Access-Control-Request-Headers") ?? "")
                .Split(',').Select(h => h.Trim()).Where(h => h.Length > 0).ToList();
            bool ok = OriginAllowed(s, origin)
                      && (s.AnyMethod || s.Methods.Contains(method))
                      && (s.AnyHeader || requested.All(h => s.Headers.Contains(h, StringComparer.OrdinalIgnoreCase)));
            if (!ok && !s.Terminate) return false;
            var r = new ResponseState();
            if (ok)
            {
                AllowOrigin(s, r, origin);
                r.Headers.Set("Access-Control-Allow-Methods", s.AnyMethod ? method : string.Join(",", s.Methods));
                if (requested.Count > 0) r.Headers.Set("Access-Control-Allow-Headers", string.Join(",", requested));
                if (s.MaxAge > 0) r.Headers.Set("Access-Control-Max-Age", s.MaxAge.ToString(CultureInfo.InvariantCulture));
            }
            Pipeline.SetResponse(exec, r);
            exec.Ended = true;
            return true;
        }
    }

    /// <summary>
    /// rate-limit-by-key-policy.md: at most calls per renewal-period seconds per counter-key
    /// (fixed window locally; APIM documents a sliding window). Over the limit: 429 with
    /// Retry-After (retry-after-header-name) and {"statusCode":429,"message":"Rate limit is exceeded.
    /// Try again in N seconds."}, LastError Reason RateLimitExceeded. With increment-condition the
    /// call is counted once the response is known, when the condition is true.
    /// remaining-calls-header-name / total-calls-header-name are added to successful responses.
    /// </summary>
    public sealed class RateLimitByKeyPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            if (node.Attribute("calls") == null) throw P.Config(node, "attribute calls is required");
            if (node.Attribute("renewal-period") == null) throw P.Config(node, "attribute renewal-period is required");
            int calls = exec.AttrInt(node, "calls");
            int period = exec.AttrInt(node, "renewal-period");
            if (calls < 0 || period <= 0) throw P.Config(node, "calls must be >= 0 and renewal-period > 0");
            var key = "rate-limit-by-key\n" + P.Required(exec, node, "counter-key");
            int increment = exec.AttrInt(node, "increment-count", 1);
            var cond = node.Attribute("increment-condition");
            var retryHeader = P.LiteralAttr(node, "retry-after-header-name", "Retry-After");
            var retryVar = P.LiteralAttr(node, "retry-after-variable-name");
            var remainingHeader = P.LiteralAttr(node, "remaining-calls-header-name");
            var remainingVar = P.LiteralAttr(node, "remaining-calls-variable-name");
            var totalHeader = P.LiteralAttr(node, "total-calls-header-name");
            var span = TimeSpan.FromSeconds(period);
            var limiter = exec.Services.RateLimits;

            int retry, remaining;
            bool ok = limiter.TryAcquire(key, calls, span, increment, cond == null, out retry, out remaining);
            if (!string.IsNullOrEmpty(remainingVar)) exec.Variables[remainingVar] = remaining;
            if (!ok)
            {
                if (!string.IsNullOrEmpty(retryVar)) exec.Variables[retryVar] = retry;
                var resp = Http.StatusMessage(429, "Rate limit is exceeded. Try again in " + retry + " seconds.");
                if (!string.IsNullOrEmpty(retryHeader)) resp.Headers.Set(retryHeader, retry.ToString(CultureInfo.InvariantCulture));
                if (!string.IsNullOrEmpty(remainingHeader)) resp.Headers.Set(remainingHeader, "0");
                if (!string.IsNullOrEmpty(totalHeader)) resp.Headers.Set(totalHeader, calls.ToString(CultureInfo.InvariantCulture));
                throw new PolicyResponseException(node.Name, "RateLimitExceeded", "Rate limit is exceeded", node.Where, resp);
            }
            var st = ExecState.Of(exec);
            if (cond != null)
                st.Completions.Add(() => { if (exec.EvalBool(cond.Value)) limiter.Add(key, span, increment); });
            if (!string.IsNullOrEmpty(remainingHeader) || !string.IsNullOrEmpty(totalHeader))
                st.ResponseHooks.Add(() =>
                {
                    if (!string.IsNullOrEmpty(remainingHeader)) exec.Response.Headers.Set(remainingHeader, remaining.ToString(CultureInfo.InvariantCulture));
                    if (!string.IsNullOrEmpty(totalHeader)) exec.Response.Headers.Set(totalHeader, calls.ToString(CultureInfo.InvariantCulture));
                });
        }
    }

    /// <summary>
    /// check-header-policy.md: the header must be present and, when &lt;value&gt;s are given, equal one
    /// of them (ignore-case). Failure: failed-check-httpcode with {"statusCode":N,"message":
    /// failed-check-error-message}; LastError Reason HeaderNotFound or HeaderValueNotAllowed.
    /// </summary>
    public sealed class CheckHeaderPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var name = P.Required(exec, node, "name");
            if (node.Attribute("failed-check-httpcode") == null) throw P.Config(node, "attribute failed-check-httpcode is required");
            int code = exec.AttrInt(node, "failed-check-httpcode");
            var message = exec.AttrString(node, "failed-check-error-message", "") ?? "";
            bool ignoreCase = exec.AttrBool(node, "ignore-case", false);
            var headers = P.OnRequest(exec) ? exec.Request.Headers : exec.Response.Headers;
            var values = headers.Get(name);
            if (values == null)
                throw new PolicyResponseException(node.Name, "HeaderNotFound",
                    "Header " + name + " was not found in the request. Access denied.", node.Where, Http.StatusMessage(code, message));
            var allowed = P.Values(exec, node);
            if (allowed.Count == 0) return;
            var cmp = ignoreCase ? StringComparer.OrdinalIgnoreCase : StringComparer.Ordinal;
            var actual = values.Concat(values.SelectMany(v => v.Split(','))).Select(v => v.Trim());
            if (!actual.Any(a => allowed.Contains(a, cmp)))
                throw new PolicyResponseException(node.Name, "HeaderValueNotAllowed",
                    "Header " + name + " value of " + string.Join(",", values) + " is not allowed. Access denied.", node.Where, Http.StatusMessage(code, message));
        }
    }
}
