// The bundle manifest: which policy files make up the gateway, read as JSON
// (the same file Bicep reads with loadJsonContent). Paths are relative to the
// manifest's directory.
//
// {
//   "policy": "global.xml",                              optional, <policies>
//   "fragments": { "fragment-id": "fragments/x.xml" },  optional, <fragment> files
//   "apis": [
//     { "name": "oauth",                                required, unique
//       "displayName": "OAuth",                         optional (default: name)
//       "description": "...",                           optional, ignored here
//       "path": "",                                     required, unique, no leading/trailing '/'
//       "serviceUrl": "{{backend-url}}",                optional, named values substituted, absolute http(s)
//       "subscriptionRequired": false,                  optional; true is refused (no subscriptions locally)
//       "policy": "oauth/api.xml",                      optional
//       "operations": [                                 optional
//         { "name": "authorize",                        required, unique in the API
//           "displayName": "Authorize", "description": "...",   optional
//           "method": "GET",                            required: an upper-case token or "*"
//           "urlTemplate": "/authorize",                required: starts with '/', {param}s, "/*" wildcard last
//           "templateParameters": [ { "name": "id", "type": "string", "required": true } ],  optional; must match the template
//           "policy": "oauth/authorize.xml" } ] } ]  optional
// }
// Keys starting with '$' ($schema, $comment) are ignored anywhere; other unknown keys are problems.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    public static class BundleLoader
    {
        private static readonly Regex NamePattern = new Regex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$");
        private static readonly Regex MethodPattern = new Regex(@"^[A-Z]+$");
        private static readonly Regex PathSegment = new Regex(@"^[A-Za-z0-9._~-]+$");
        private static readonly Regex ParamName = new Regex(@"^[A-Za-z_][A-Za-z0-9_-]*$");

        /// <summary>The API's displayName from the manifest (its name when none was given).</summary>
        public static string DisplayName(ApiDef api)
        {
            return api == null ? null : api.DisplayName ?? api.Name;
        }

        /// <summary>The operation's displayName from the manifest (its name when none was given).</summary>
        public static string DisplayName(OperationDef op)
        {
            return op == null ? null : op.DisplayName ?? op.Name;
        }

        /// <summary>
        /// Reads the manifest, the named values (namedValuesPath may be null: none) and every policy
        /// file; substitutes named values; parses the documents; numbers every expression into
        /// Bundle.Expressions. Problems are added to the list; the returned bundle holds what could
        /// be read (null only when the manifest itself is unreadable).
        /// </summary>
        public static Bundle Load(string manifestPath, string namedValuesPath, List<Problem> problems)
        {
            var loader = new Loader(problems);
            try
            {
                return loader.Load(manifestPath, namedValuesPath);
            }
            catch (Exception e)
            {
                problems.Add(new Problem(new SourceRef(Path.GetFileName(manifestPath ?? "manifest"), 1), "cannot load the bundle: " + e.Message));
                return loader.Bundle;
            }
        }

        private sealed class Loader
        {
            private readonly List<Problem> problems;
            public Bundle Bundle;
            private string manifestLabel;
            private readonly Dictionary<string, PolicyDocument> docs = new Dictionary<string, PolicyDocument>(StringComparer.Ordinal);
            private readonly HashSet<string> failedDocs = new HashSet<string>(StringComparer.Ordinal);

            public Loader(List<Problem> problems) { this.problems = problems; }

            private SourceRef At(JToken t) { return new SourceRef(manifestLabel, NamedValues.LineOf(t)); }
            private void Report(JToken t, string msg) { problems.Add(new Problem(At(t), msg)); }

            public Bundle Load(string manifestPath, string namedValuesPath)
            {
                string full = Path.GetFullPath(manifestPath);
                Bundle = new Bundle { Root = Path.GetDirectoryName(full) };
                manifestLabel = Path.GetFileName(full);

                if (namedValuesPath != null)
                {
                    var nv = NamedValues.Load(namedValuesPath, problems, Label(namedValuesPath));
                    foreach (var kv in nv) Bundle.NamedValues[kv.Key] = kv.Value;
                }

                string text;
                try { text = File.ReadAllText(full); }
                catch (Exception e)
                {
                    problems.Add(new Problem(new SourceRef(manifestLabel, 1), "cannot read the manifest: " + e.Message));
                    return null;
                }
                JToken rootTok;
                try { rootTok = JToken.Parse(text); }
                catch (JsonReaderException e)
                {
                    problems.Add(new Problem(new SourceRef(manifestLabel, Math.Max(1, e.LineNumber)), "the manifest is not valid JSON: " + e.Message));
                    return null;
                }
                var root = rootTok as JObject;
                if (root == null)
                {
                    Report(rootTok, "the manifest must be a JSON object with \"policy\", \"fragments\" and \"apis\"");
                    return null;
                }
                CheckKeys(root, "the manifest", "policy", "fragments", "apis");

                // fragments first: policies refer to them
                var frags = root["fragments"];
                if (frags != null)
                {
                    var fo = frags as JObject;
                    if (fo == null) Report(frags, "\"fragments\" must be an object {\"fragment-id\": \"path\"}");
                    else
                        foreach (var p in fo.Properties())
                        {
                            if (p.Name.StartsWith("$")) continue;
                            if (!NamePattern.IsMatch(p.Name))
                            {
                                Report(p, "fragment id \"" + p.Name + "\" is invalid: use 1-80 letters, digits, '.', '-' or '_', starting with a letter or digit");
                                continue;
                            }
                            string file;
                            var doc = LoadDoc(p.Value, "fragment", "fragment \"" + p.Name + "\"", out file);
                            if (file != null) Bundle.FragmentFiles[p.Name] = file;
                            if (doc != null) Bundle.Fragments[p.Name] = doc;
                        }
                }

                var pol = root["policy"];
                if (pol != null)
                {
                    string file;
                    Bundle.Global = LoadDoc(pol, "policies", "\"policy\"", out file);
                    Bundle.GlobalFile = file;
                }

                var apis = root["apis"];
                if (apis == null) Report(root, "the manifest has no \"apis\": the gateway would serve nothing");
                else if (!(apis is JArray)) Report(apis, "\"apis\" must be an array");
                else
                {
                    var names = new Dictionary<string, JToken>(StringComparer.OrdinalIgnoreCase);
                    var paths = new Dictionary<string, JToken>(StringComparer.OrdinalIgnoreCase);
                    foreach (var at in (JArray)apis)
                    {
                        var api = LoadApi(at);
                        if (api == null) continue;
                        if (names.ContainsKey(api.Name))
                            Report(at, "API name \"" + api.Name + "\" is used twice (also at line " + NamedValues.LineOf(names[api.Name]) + ")");
                        else names[api.Name] = at;
                        if (api.Path != null)
                        {
                            if (paths.ContainsKey(api.Path))
                                Report(at, "API path \"" + api.Path + "\" is used twice (also at line " + NamedValues.LineOf(paths[api.Path]) + "); APIM requires unique API paths");
                            else paths[api.Path] = at;
                        }
                        Bundle.Apis.Add(api);
                    }
                }

                CollectExpressions();
                return Bundle;
            }

            private void CheckKeys(JObject o, string what, params string[] known)
            {
                foreach (var p in o.Properties())
                {
                    if (p.Name.StartsWith("$") || known.Contains(p.Name)) continue;
                    Report(p, "unknown key \"" + p.Name + "\" in " + what + " (known: " + string.Join(", ", known) + ")");
                }
            }

            private string Str(JObject o, string key, string what, bool required)
            {
                var t = o[key];
                if (t == null || t.Type == JTokenType.Null)
                {
                    if (required) Report(o, what + " has no \"" + key + "\"");
                    return null;
                }
                if (t.Type != JTokenType.String) { Report(t, "\"" + key + "\" of " + what + " must be a string"); return null; }
                return (string)t;
            }

            private ApiDef LoadApi(JToken at)
            {
                var o = at as JObject;
                if (o == null) { Report(at, "each entry of \"apis\" must be an object"); return null; }
                string name = Str(o, "name", "an API", true);
                if (name == null) return null;
                string what = "API \"" + name + "\"";
                if (!NamePattern.IsMatch(name))
                    Report(o["name"], "API name \"" + name + "\" is invalid: use 1-80 letters, digits, '.', '-' or '_', starting with a letter or digit");
                CheckKeys(o, what, "name", "displayName", "description", "path", "serviceUrl", "subscriptionRequired", "policy", "operations");
                var api = new ApiDef { Name = name };
                string display = Str(o, "displayName", what, false);
                api.DisplayName = string.IsNullOrEmpty(display) ? name : display;
                Str(o, "description", what, false);

                string path = Str(o, "path", what, true);
                if (path != null)
                {
                    if (path.StartsWith("/") || path.EndsWith("/"))
                        Report(o["path"], what + ": \"path\" must not start or end with '/' (\"\" serves the API at the gateway root)");
                    else if (path.Length > 0 && !path.Split('/').All(seg => PathSegment.IsMatch(seg)))
                        Report(o["path"], what + ": \"path\" \"" + path + "\" may hold only letters, digits, '.', '_', '~', '-' in '/'-separated segments");
                    api.Path = path.Trim('/');
                }

                var su = o["serviceUrl"];
                if (su != null && su.Type != JTokenType.Null)
                {
                    string raw = Str(o, "serviceUrl", what, false);
                    if (raw != null)
                    {
                        string url = NamedValues.SubstituteString(raw, Bundle.NamedValues, At(su), problems);
                        Uri u;
                        if (url.Length > 0 && (!Uri.TryCreate(url, UriKind.Absolute, out u) || (u.Scheme != "http" && u.Scheme != "https")))
                            Report(su, what + ": \"serviceUrl\" must be an absolute http or https URL, got \"" + url + "\"");
                        api.ServiceUrl = url.TrimEnd('/');
                    }
                }

                var sr = o["subscriptionRequired"];
                if (sr != null)
                {
                    if (sr.Type != JTokenType.Boolean) Report(sr, what + ": \"subscriptionRequired\" must be true or false");
                    else if ((bool)sr) Report(sr, what + ": \"subscriptionRequired\": true is not supported by the local gateway (it has no subscriptions); set it to false");
                }

                if (o["policy"] != null && o["policy"].Type != JTokenType.Null)
                {
                    string file;
                    api.Policy = LoadDoc(o["policy"], "policies", what, out file);
                    api.PolicyFile = file;
                }

                var ops = o["operations"];
                if (ops != null && ops.Type != JTokenType.Null)
                {
                    if (!(ops is JArray)) Report(ops, what + ": \"operations\" must be an array");
                    else
                    {
                        var opNames = new Dictionary<string, JToken>(StringComparer.OrdinalIgnoreCase);
                        var routes = new Dictionary<string, JToken>(StringComparer.Ordinal);
                        foreach (var ot in (JArray)ops)
                        {
                            var op = LoadOperation(ot, what);
                            if (op == null) continue;
                            if (opNames.ContainsKey(op.Name))
                                Report(ot, what + ": operation name \"" + op.Name + "\" is used twice (also at line " + NamedValues.LineOf(opNames[op.Name]) + ")");
                            else opNames[op.Name] = ot;
                            if (op.Method != null && op.UrlTemplate != null)
                            {
                                string route = op.Method + " " + NormalizeTemplate(op.UrlTemplate);
                                if (routes.ContainsKey(route))
                                    Report(ot, what + ": operation \"" + op.Name + "\" has the same method and URL template as the operation at line " + NamedValues.LineOf(routes[route]));
                                else routes[route] = ot;
                            }
                            api.Operations.Add(op);
                        }
                    }
                }
                return api;
            }

            /// <summary>Template with parameter names erased, so /a/{x} and /a/{y} collide as APIM says.</summary>
            private static string NormalizeTemplate(string t)
            {
                return Regex.Replace(t, @"\{[^}]*\}", "{}").ToLowerInvariant();
            }

            private OperationDef LoadOperation(JToken ot, string apiWhat)
            {
                var o = ot as JObject;
                if (o == null) { Report(ot, apiWhat + ": each operation must be an object"); return null; }
                string name = Str(o, "name", "an operation of " + apiWhat, true);
                if (name == null) return null;
                string what = apiWhat + " operation \"" + name + "\"";
                if (!NamePattern.IsMatch(name))
                    Report(o["name"], "operation name \"" + name + "\" is invalid: use 1-80 letters, digits, '.', '-' or '_', starting with a letter or digit");
                CheckKeys(o, what, "name", "displayName", "description", "method", "urlTemplate", "templateParameters", "policy");
                var op = new OperationDef { Name = name };
                string display = Str(o, "displayName", what, false);
                op.DisplayName = string.IsNullOrEmpty(display) ? name : display;
                Str(o, "description", what, false);

                string method = Str(o, "method", what, true);
                if (method != null)
                {
                    if (method != "*" && !MethodPattern.IsMatch(method))
                        Report(o["method"], what + ": \"method\" must be an upper-case HTTP method such as GET or POST, or \"*\"; got \"" + method + "\"");
                    op.Method = method;
                }
                string tmpl = Str(o, "urlTemplate", what, true);
                List<string> parameters = null;
                if (tmpl != null)
                {
                    string err;
                    parameters = TemplateParameters(tmpl, out err);
                    if (err != null) Report(o["urlTemplate"], what + ": \"urlTemplate\" \"" + tmpl + "\" " + err);
                    op.UrlTemplate = tmpl;
                }
                var tp = o["templateParameters"];
                if (tp != null && tp.Type != JTokenType.Null)
                {
                    if (!(tp is JArray)) Report(tp, what + ": \"templateParameters\" must be an array");
                    else
                    {
                        var declared = new List<string>();
                        foreach (var pt in (JArray)tp)
                        {
                            var po = pt as JObject;
                            if (po == null) { Report(pt, what + ": each template parameter must be an object"); continue; }
                            CheckKeys(po, what + " template parameter", "name", "type", "required", "description", "values", "defaultValue");
                            string pn = Str(po, "name", what + " template parameter", true);
                            if (pn != null) declared.Add(pn);
                        }
                        if (parameters != null)
                        {
                            foreach (var p in parameters.Where(p => !declared.Contains(p)))
                                Report(tp, what + ": template parameter {" + p + "} is not declared in \"templateParameters\"");
                            foreach (var p in declared.Where(p => !parameters.Contains(p)))
                                Report(tp, what + ": \"templateParameters\" declares \"" + p + "\", which is not in the URL template");
                        }
                    }
                }
                if (o["policy"] != null && o["policy"].Type != JTokenType.Null)
                {
                    string file;
                    op.Policy = LoadDoc(o["policy"], "policies", what, out file);
                    op.PolicyFile = file;
                }
                return op;
            }

            /// <summary>The {parameters} of a URL template, or an error (set in err) describing what is wrong with it.</summary>
            internal static List<string> TemplateParameters(string t, out string err)
            {
                err = null;
                var result = new List<string>();
                if (!t.StartsWith("/")) { err = "must start with '/'"; return result; }
                string path = t, query = null;
                int q = t.IndexOf('?');
                if (q >= 0) { path = t.Substring(0, q); query = t.Substring(q + 1); }
                var segs = path.Substring(1).Split('/');
                for (int i = 0; i < segs.Length; i++)
                {
                    string seg = segs[i];
                    if (seg.Length == 0)
                    {
                        if (i == segs.Length - 1) break; // "/" or a trailing slash
                        err = "has an empty path segment ('//')";
                        return result;
                    }
                    if (seg == "*")
                    {
                        if (i != segs.Length - 1 || query != null) { err = "may use the wildcard '*' only as its last segment (\"/*\")"; return result; }
                        continue;
                    }
                    if (!ParseSegment(seg, result, out err)) return result;
                }
                if (query != null)
                {
                    foreach (var part in query.Split('&'))
                    {
                        int eq = part.IndexOf('=');
                        if (eq <= 0) { err = "has a malformed query part \"" + part + "\" (expected name={param})"; return result; }
                        if (!ParseSegment(part.Substring(eq + 1), result, out err)) return result;
                    }
                }
                var dup = result.GroupBy(x => x, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1);
                if (dup != null) err = "uses the parameter {" + dup.Key + "} twice";
                return result;
            }

            private static bool ParseSegment(string seg, List<string> result, out string err)
            {
                err = null;
                int i = 0;
                while (i < seg.Length)
                {
                    char c = seg[i];
                    if (c == '{')
                    {
                        int end = seg.IndexOf('}', i);
                        if (end < 0) { err = "has an unclosed '{'"; return false; }
                        string name = seg.Substring(i + 1, end - i - 1);
                        if (!ParamName.IsMatch(name)) { err = "has an invalid parameter name {" + name + "}"; return false; }
                        result.Add(name);
                        i = end + 1;
                        if (i < seg.Length && seg[i] == '{') { err = "has two parameters with nothing between them"; return false; }
                        continue;
                    }
                    if (c == '}') { err = "has an unmatched '}'"; return false; }
                    if (c == '*' || c == ' ' || c == '#' || c == '?' || c == '\\' || char.IsControl(c)) { err = "has an invalid character '" + c + "'"; return false; }
                    i++;
                }
                return true;
            }

            private string Label(string path)
            {
                string full = Path.GetFullPath(path);
                string root = Bundle.Root.EndsWith("/") ? Bundle.Root : Bundle.Root + "/";
                if (full.StartsWith(root, StringComparison.Ordinal)) return full.Substring(root.Length).Replace('\\', '/');
                return path.Replace('\\', '/');
            }

            /// <summary>
            /// Reads and parses one policy file. file receives the file's label (its path relative to
            /// the bundle root, as problems name it) whenever the path itself is usable, even when the
            /// file cannot be read or parsed (then null is returned), so that problems in it can be
            /// attributed to the scopes that reference it.
            /// </summary>
            private PolicyDocument LoadDoc(JToken pathTok, string kind, string what, out string file)
            {
                file = null;
                if (pathTok.Type != JTokenType.String) { Report(pathTok, what + ": the policy path must be a string"); return null; }
                string rel = (string)pathTok;
                if (rel.Length == 0) { Report(pathTok, what + ": the policy path is empty"); return null; }
                if (Path.IsPathRooted(rel)) { Report(pathTok, what + ": the policy path \"" + rel + "\" must be relative to the manifest's directory"); return null; }
                string full = Path.GetFullPath(Path.Combine(Bundle.Root, rel));
                string key = kind + "|" + full;
                string label = Label(full);
                file = label;
                PolicyDocument cached;
                if (docs.TryGetValue(key, out cached)) return cached;
                if (failedDocs.Contains(key)) return null;
                if (!File.Exists(full))
                {
                    Report(pathTok, what + ": policy file \"" + rel + "\" does not exist");
                    failedDocs.Add(key);
                    return null;
                }
                string text;
                try { text = File.ReadAllText(full); }
                catch (Exception e)
                {
                    Report(pathTok, what + ": cannot read \"" + rel + "\": " + e.Message);
                    failedDocs.Add(key);
                    return null;
                }
                if (kind == "fragment" && text.Length > 32 * 1024)
                    problems.Add(new Problem(new SourceRef(label, 1), "the fragment is " + text.Length + " characters; APIM allows at most 32 KB per policy fragment"));
                else if (text.Length > 256 * 1024)
                    problems.Add(new Problem(new SourceRef(label, 1), "the policy document is " + text.Length + " characters; APIM allows at most 256 KiB"));
                var src = NamedValues.Substitute(label, text, Bundle.NamedValues, problems);
                var doc = RawXml.ParseDocument(src, problems, kind);
                if (doc == null) { failedDocs.Add(key); return null; }
                docs[key] = doc;
                return doc;
            }

            private void CollectExpressions()
            {
                var seen = new HashSet<PolicyDocument>();
                var order = new List<PolicyDocument>();
                Action<PolicyDocument> add = d => { if (d != null && seen.Add(d)) order.Add(d); };
                add(Bundle.Global);
                foreach (var api in Bundle.Apis)
                {
                    add(api.Policy);
                    foreach (var op in api.Operations) add(op.Policy);
                }
                foreach (var f in Bundle.Fragments.Values) add(f);
                int id = 1;
                foreach (var d in order)
                    foreach (var e in RawXml.Expressions(d.Root))
                    {
                        e.Id = id++;
                        Bundle.Expressions.Add(e);
                    }
            }
        }
    }
}
