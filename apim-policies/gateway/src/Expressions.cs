// Compiles every policy expression of a bundle with the real C# compiler
// (Mono's CSharpCodeProvider, which runs mcs) into one assembly, one method per
// expression, then checks APIM's allow-list of .NET types and members on the
// compiled IL with Mono.Cecil, and binds each method to Expression.Compiled.
//
// Generated code, per expression (the #line makes compiler errors name the
// policy file and line):
//   #line 12 "oauth/api.xml"
//   public static object E7(IContextSurface context) { return (object)(<code>
//   ); }
//   #line default
// and for @{ ... } the statements are the method body.
//
// Allow-list (shared/reference/apim/expressions.md section 2), checked on every
// instruction operand (types, methods, fields, generic arguments), local
// variable types, catch types, and inside the compiler-generated closure,
// lambda and iterator types an expression uses. Besides the documented list,
// these are accepted because the C# compiler emits them for ordinary code, or
// because they are only reachable through listed types:
//   - System.Object members (ToString, Equals, GetHashCode, GetType, ReferenceEquals, .ctor) on any
//     type, ValueType/Enum ToString/Equals/GetHashCode/CompareTo (boxing, constrained calls);
//     using GetType() gets nothing further: System.Type is not allowed;
//   - IDisposable.Dispose, IEnumerable.GetEnumerator, IEnumerator.MoveNext/Current/Reset (using,
//     foreach), nested types of fully allowed types (List<T>.Enumerator, Dictionary KeyCollection);
//   - delegates Func<...>, Action<...>, Predicate<T>, Comparison<T>, Converter<,>: constructor and
//     Invoke only (lambdas; Delegate.Method and friends stay forbidden);
//   - RuntimeHelpers.InitializeArray (array initializers);
//   - DateTime operators (op_Subtraction, op_LessThan, ...), equivalent to the listed Subtract;
//   - System.Linq IOrderedEnumerable, IGrouping, ILookup (results of the allowed Enumerable);
//     Newtonsoft JEnumerable<T>, IJEnumerable<T> (results of the allowed JToken members);
//   - TextReader/TextWriter members (the declaring types of most StringReader/StringWriter methods);
//   - RandomNumberGenerator GetBytes/GetNonZeroBytes/Dispose (declared there, used via RNGCryptoServiceProvider);
//   - Newtonsoft.Json.JsonConverter as a type only (the empty params array of JToken.ToString(Formatting));
//   - the context surface of this gateway (IContextSurface and the types it exposes, Jwt,
//     BasicAuthCredentials, ContextExtensions); no other Gateway type;
//   - compiler-generated types and members of the expression assembly itself (scanned in turn,
//     except anonymous types, whose generated Equals/GetHashCode use EqualityComparer).
// Limits: enum members (DateTimeKind.Utc only) compile to plain constants, so the enum member
// restriction cannot be seen in IL; a use of the enum type itself is checked.
using System;
using System.CodeDom.Compiler;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using Mono.Cecil;
using Mono.Cecil.Cil;

namespace Gateway
{
    public static class ExpressionCompiler
    {
        private const string Namespace = "GatewayExpressions";
        private const string ClassName = "Compiled";

        private static readonly string[] Usings =
        {
            "System", "System.Collections.Generic", "System.Linq", "System.Text", "System.Text.RegularExpressions",
            "System.Xml.Linq", "System.Net", "System.Security.Cryptography", "Newtonsoft.Json", "Newtonsoft.Json.Linq", "Gateway"
        };

        /// <summary>
        /// Compiles b.Expressions. Expressions that compile and pass the allow-list get Compiled set;
        /// every compile error and forbidden use is a problem at its policy file and line.
        /// </summary>
        public static void Compile(Bundle b, List<Problem> problems)
        {
            var sw = Stopwatch.StartNew();
            try
            {
                CompileCore(b, problems);
            }
            catch (Exception e)
            {
                problems.Add(new Problem(null, "cannot compile the policy expressions: " + e.Message));
            }
            if (b != null) b.ExpressionCompileTime = sw.Elapsed;
        }

        private static readonly Regex Directive = new Regex(@"^[ \t]*#", RegexOptions.Multiline);

        private static void CompileCore(Bundle b, List<Problem> problems)
        {
            if (b == null) return;
            var pending = new List<Expression>();
            foreach (var e in b.Expressions)
            {
                e.Compiled = null;
                if (e.Code == null) continue;
                if (Directive.IsMatch(e.Code))
                {
                    problems.Add(new Problem(e.Where, "preprocessor directives (#...) are not allowed in policy expressions"));
                    continue;
                }
                if (e.Code.Trim().Length == 0)
                {
                    problems.Add(new Problem(e.Where, "the policy expression is empty"));
                    continue;
                }
                pending.Add(e);
            }
            if (pending.Count == 0) return;

            string dir = Path.Combine(Path.GetTempPath(), "apim-gateway-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            try
            {
                // A compile error fails the whole assembly, and a syntax error can make the parser
                // report errors in the methods after it. So: compile everything; when that fails,
                // compile each expression the errors point at on its own, report the errors it has
                // alone, drop it, and compile the rest again (so they are still checked and bound).
                int n = 0;
                var reported = new HashSet<string>();
                for (int round = 0; round < 8 && pending.Count > 0; round++)
                {
                    string dll = Path.Combine(dir, "expressions" + (n++) + ".dll");
                    var result = RunCompiler(GenerateSource(pending), dll);
                    var errors = Errors(result);
                    if (errors.Count == 0 && File.Exists(dll))
                    {
                        CheckAndBind(File.ReadAllBytes(dll), pending, problems);
                        return;
                    }
                    if (errors.Count == 0)
                    {
                        problems.Add(new Problem(null, "the C# compiler produced no assembly: " + string.Join(" | ", result.Output.Cast<string>())));
                        return;
                    }
                    var implicated = new List<Expression>();
                    var unmapped = new List<CompilerError>();
                    foreach (var err in errors)
                    {
                        Expression e;
                        int line;
                        if (MapError(err, pending, out e, out line)) { if (!implicated.Contains(e)) implicated.Add(e); }
                        else unmapped.Add(err);
                    }
                    var failed = new HashSet<Expression>();
                    foreach (var e in implicated)
                    {
                        var alone = Errors(RunCompiler(GenerateSource(new[] { e }), Path.Combine(dir, "expressions" + (n++) + ".dll")));
                        if (alone.Count == 0) continue; // only a victim of another expression's syntax error
                        failed.Add(e);
                        foreach (var err in alone) Report(err, new List<Expression> { e }, problems, reported);
                    }
                    if (failed.Count == 0)
                    {
                        // could not isolate: report what the compiler said
                        foreach (var err in errors) Report(err, pending, problems, reported);
                        return;
                    }
                    pending = pending.Where(x => !failed.Contains(x)).ToList();
                }
            }
            finally
            {
                try { Directory.Delete(dir, true); } catch (Exception) { }
            }
        }

        private static List<CompilerError> Errors(CompilerResults r)
        {
            return r.Errors.Cast<CompilerError>().Where(x => !x.IsWarning).ToList();
        }

        private static readonly Regex EntityText = new Regex(@"&(lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);");

        private static void Report(CompilerError err, List<Expression> among, List<Problem> problems, HashSet<string> reported)
        {
            Expression e;
            int line;
            Problem p;
            bool mapped = MapError(err, among, out e, out line);
            if (!mapped && among.Count == 1)
            {
                // compiled on its own: an error without a usable place is still this expression's
                e = among[0];
                line = e.Where.Line;
                mapped = true;
            }
            if (mapped)
            {
                string hint = EntityText.IsMatch(e.Code)
                    ? " (the rawxml format does not decode XML entities inside expressions: write <, >, &, \" as they are)"
                    : "";
                p = new Problem(new SourceRef(e.Where.File, line), "C# compile error " + err.ErrorNumber + ": " + err.ErrorText + hint);
            }
            else
                p = new Problem(null, "C# compile error in the generated expression code " + err.ErrorNumber + ": " + err.ErrorText
                    + (err.Line > 0 ? " (generated line " + err.Line + ")" : ""));
            if (reported.Add(p.ToString())) problems.Add(p);
        }

        /// <summary>The C# source for a set of expressions.</summary>
        public static string GenerateSource(IEnumerable<Expression> expressions)
        {
            var sb = new StringBuilder();
            foreach (var u in Usings) sb.Append("using ").Append(u).Append(";\n");
            sb.Append("namespace ").Append(Namespace).Append(" {\n");
            sb.Append("public static class ").Append(ClassName).Append(" {\n");
            foreach (var e in expressions)
            {
                sb.Append("#line ").Append(Math.Max(1, e.Where.Line)).Append(" \"").Append(EscapeFile(e.Where.File)).Append("\"\n");
                sb.Append("public static object E").Append(e.Id).Append("(IContextSurface context) { ");
                // The closing delimiters go on the code's last line (so errors at the end of the
                // code name its line), unless that line may end in a // comment.
                int lastNl = e.Code.LastIndexOf('\n');
                string sep = e.Code.IndexOf("//", lastNl + 1, StringComparison.Ordinal) >= 0 ? "\n" : " ";
                if (e.Multi)
                    sb.Append(e.Code).Append(sep).Append("}\n");
                else
                    sb.Append("return (object)(").Append(e.Code).Append(sep).Append("); }\n");
                sb.Append("#line default\n");
            }
            sb.Append("}\n}\n");
            return sb.ToString();
        }

        private static string EscapeFile(string f)
        {
            return (f ?? "policy").Replace("\\", "/").Replace("\"", "'").Replace("\n", " ");
        }

        private static CompilerResults RunCompiler(string source, string dll)
        {
            var provider = new Microsoft.CSharp.CSharpCodeProvider();
            var cp = new CompilerParameters
            {
                GenerateInMemory = false,
                GenerateExecutable = false,
                OutputAssembly = dll,
                IncludeDebugInformation = false,
                TreatWarningsAsErrors = false,
                WarningLevel = 0,
            };
            cp.ReferencedAssemblies.Add(typeof(ExpressionCompiler).Assembly.Location);
            cp.ReferencedAssemblies.Add(typeof(Newtonsoft.Json.JsonConvert).Assembly.Location);
            cp.ReferencedAssemblies.Add("System.dll");
            cp.ReferencedAssemblies.Add("System.Core.dll");
            cp.ReferencedAssemblies.Add("System.Xml.dll");
            cp.ReferencedAssemblies.Add("System.Xml.Linq.dll");
            cp.ReferencedAssemblies.Add("System.Numerics.dll");
            return provider.CompileAssemblyFromSource(cp, source);
        }

        /// <summary>Finds the expression (and original line) a compiler error belongs to.</summary>
        private static bool MapError(CompilerError err, List<Expression> pending, out Expression found, out int line)
        {
            found = null;
            line = err.Line;
            if (string.IsNullOrEmpty(err.FileName) || err.Line <= 0) return false;
            string fn = err.FileName.Replace('\\', '/');
            Expression best = null;
            foreach (var e in pending)
            {
                string f = EscapeFile(e.Where.File);
                // mcs reports #line file names relative to the temp source's directory: match the tail.
                if (!(fn == f || fn.EndsWith("/" + f))) continue;
                int start = Math.Max(1, e.Where.Line);
                int codeLines = e.Code.Count(c => c == '\n') + 1; // the closing line may follow the code
                if (err.Line < start || err.Line > start + codeLines) continue;
                if (best == null || start > best.Where.Line) best = e;
            }
            if (best == null) return false;
            found = best;
            line = ExpressionLines.LineOf(best, err.Line - Math.Max(1, best.Where.Line));
            return true;
        }

        // ---- allow-list check on the IL ----

        private static readonly HashSet<string> AllowedAll = new HashSet<string>(StringComparer.Ordinal)
        {
            // Newtonsoft.Json
            "Newtonsoft.Json.Formatting", "Newtonsoft.Json.Linq.Extensions", "Newtonsoft.Json.Linq.JArray",
            "Newtonsoft.Json.Linq.JConstructor", "Newtonsoft.Json.Linq.JContainer", "Newtonsoft.Json.Linq.JObject",
            "Newtonsoft.Json.Linq.JProperty", "Newtonsoft.Json.Linq.JRaw", "Newtonsoft.Json.Linq.JToken",
            "Newtonsoft.Json.Linq.JTokenType", "Newtonsoft.Json.Linq.JValue",
            // System
            "System.Array", "System.BitConverter", "System.Boolean", "System.Byte", "System.Char", "System.Convert",
            "System.DateTimeOffset", "System.Decimal", "System.Double", "System.Exception", "System.Guid", "System.Int16",
            "System.Int32", "System.Int64", "System.Math", "System.MidpointRounding", "System.Nullable", "System.Nullable`1",
            "System.Random", "System.SByte", "System.Single", "System.String", "System.StringComparer", "System.StringComparison",
            "System.StringSplitOptions", "System.TimeSpan", "System.TimeZone", "System.TimeZoneInfo",
            "System.TimeZoneInfo/AdjustmentRule", "System.TimeZoneInfo/TransitionTime",
            "System.Tuple", "System.Tuple`1", "System.Tuple`2", "System.Tuple`3", "System.Tuple`4", "System.Tuple`5",
            "System.Tuple`6", "System.Tuple`7", "System.Tuple`8",
            "System.UInt16", "System.UInt32", "System.UInt64", "System.Uri", "System.UriPartial",
            // System.Collections.Generic
            "System.Collections.Generic.Dictionary`2", "System.Collections.Generic.HashSet`1",
            "System.Collections.Generic.ICollection`1", "System.Collections.Generic.IDictionary`2",
            "System.Collections.Generic.IEnumerable`1", "System.Collections.Generic.IEnumerator`1",
            "System.Collections.Generic.IList`1", "System.Collections.Generic.IReadOnlyCollection`1",
            "System.Collections.Generic.IReadOnlyDictionary`2", "System.Collections.Generic.ISet`1",
            "System.Collections.Generic.KeyValuePair`2", "System.Collections.Generic.List`1",
            "System.Collections.Generic.Queue`1", "System.Collections.Generic.Stack`1",
            // System.IO, System.Linq, System.Net
            "System.IO.StringReader", "System.IO.StringWriter", "System.Linq.Enumerable",
            "System.Net.IPAddress", "System.Net.WebUtility",
            // System.Security.Cryptography
            "System.Security.Cryptography.AsymmetricAlgorithm", "System.Security.Cryptography.CipherMode",
            "System.Security.Cryptography.HashAlgorithm", "System.Security.Cryptography.HashAlgorithmName",
            "System.Security.Cryptography.HMAC", "System.Security.Cryptography.HMACMD5", "System.Security.Cryptography.HMACSHA1",
            "System.Security.Cryptography.HMACSHA256", "System.Security.Cryptography.HMACSHA384",
            "System.Security.Cryptography.HMACSHA512", "System.Security.Cryptography.KeyedHashAlgorithm",
            "System.Security.Cryptography.MD5", "System.Security.Cryptography.Oid", "System.Security.Cryptography.PaddingMode",
            "System.Security.Cryptography.RNGCryptoServiceProvider", "System.Security.Cryptography.RSA",
            "System.Security.Cryptography.RSAEncryptionPadding", "System.Security.Cryptography.RSASignaturePadding",
            "System.Security.Cryptography.SHA1", "System.Security.Cryptography.SHA1Managed", "System.Security.Cryptography.SHA256",
            "System.Security.Cryptography.SHA256Managed", "System.Security.Cryptography.SHA384",
            "System.Security.Cryptography.SHA384Managed", "System.Security.Cryptography.SHA512",
            "System.Security.Cryptography.SHA512Managed", "System.Security.Cryptography.SymmetricAlgorithm",
            // X509
            "System.Security.Cryptography.X509Certificates.PublicKey",
            "System.Security.Cryptography.X509Certificates.RSACertificateExtensions",
            "System.Security.Cryptography.X509Certificates.X509Certificate",
            "System.Security.Cryptography.X509Certificates.X509Certificate2",
            "System.Security.Cryptography.X509Certificates.X509ContentType",
            "System.Security.Cryptography.X509Certificates.X509NameType",
            // System.Text
            "System.Text.Encoding", "System.Text.StringBuilder", "System.Text.RegularExpressions.RegexOptions",
            // System.Xml.Linq
            "System.Xml.Linq.Extensions", "System.Xml.Linq.XAttribute", "System.Xml.Linq.XCData", "System.Xml.Linq.XComment",
            "System.Xml.Linq.XContainer", "System.Xml.Linq.XDeclaration", "System.Xml.Linq.XDocumentType",
            "System.Xml.Linq.XElement", "System.Xml.Linq.XName", "System.Xml.Linq.XNamespace", "System.Xml.Linq.XNode",
            "System.Xml.Linq.XNodeDocumentOrderComparer", "System.Xml.Linq.XNodeEqualityComparer", "System.Xml.Linq.XObject",
            "System.Xml.Linq.XProcessingInstruction", "System.Xml.Linq.XText", "System.Xml.XmlNodeType",

            // implied (see the header comment)
            "System.Linq.IOrderedEnumerable`1", "System.Linq.IGrouping`2", "System.Linq.ILookup`2",
            "Newtonsoft.Json.Linq.JEnumerable`1", "Newtonsoft.Json.Linq.IJEnumerable`1",
            "System.IO.TextReader", "System.IO.TextWriter",
        };

        private static readonly string[] ObjectMembers = { "ToString", "Equals", "GetHashCode", "GetType" };

        /// <summary>Types of which only the listed members may be used (names: properties without get_/set_, .ctor for constructors).</summary>
        private static readonly Dictionary<string, HashSet<string>> AllowedMembers = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal)
        {
            { "System.DateTime", Set(".ctor", "Add", "AddDays", "AddHours", "AddMilliseconds", "AddMinutes", "AddMonths", "AddSeconds",
                "AddTicks", "AddYears", "Date", "Day", "DayOfWeek", "DayOfYear", "DaysInMonth", "Hour", "IsDaylightSavingTime",
                "IsLeapYear", "MaxValue", "Millisecond", "Minute", "MinValue", "Month", "Now", "Parse", "Second", "Subtract", "Ticks",
                "TimeOfDay", "Today", "ToString", "UtcNow", "Year",
                "op_Addition", "op_Subtraction", "op_Equality", "op_Inequality", "op_LessThan", "op_LessThanOrEqual",
                "op_GreaterThan", "op_GreaterThanOrEqual") },
            { "System.DateTimeKind", Set("Utc") },
            { "System.Text.RegularExpressions.Regex", Set(".ctor", "IsMatch", "Match", "Matches", "Replace", "Unescape", "Split") },
            { "System.Text.RegularExpressions.Match", Set("Empty", "Groups", "Result") },
            { "System.Text.RegularExpressions.Group", Set("Captures", "Success") },
            { "System.Text.RegularExpressions.GroupCollection", Set("Count", "Item") },
            { "System.Text.RegularExpressions.CaptureCollection", Set("Count", "Item") },
            { "System.Text.RegularExpressions.Capture", Set("Index", "Length", "Value") },
            { "Newtonsoft.Json.JsonConvert", Set("SerializeObject", "DeserializeObject") },
            { "System.Security.Cryptography.X509Certificates.X500DistinguishedName", Set("Name") },
            // implied
            { "System.Object", Set(".ctor", "ToString", "Equals", "GetHashCode", "GetType", "ReferenceEquals") },
            { "System.ValueType", Set("ToString", "Equals", "GetHashCode") },
            { "System.Enum", Set("ToString", "Equals", "GetHashCode", "CompareTo") },
            { "System.IDisposable", Set("Dispose") },
            { "System.Collections.IEnumerable", Set("GetEnumerator") },
            { "System.Collections.IEnumerator", Set("MoveNext", "Current", "Reset") },
            { "System.Runtime.CompilerServices.RuntimeHelpers", Set("InitializeArray") },
            { "System.Security.Cryptography.RandomNumberGenerator", Set("GetBytes", "GetNonZeroBytes", "Dispose") },
        };

        /// <summary>
        /// Types that may appear (as an array element type, a local's type) but whose members may not
        /// be used: the element type of params arrays of allowed methods, which the compiler creates
        /// even when no argument is passed (JToken.ToString(Formatting, params JsonConverter[])).
        /// </summary>
        private static readonly HashSet<string> TypeOnly = new HashSet<string>(StringComparer.Ordinal) { "Newtonsoft.Json.JsonConverter" };

        /// <summary>XDocument: everything except Load.</summary>
        private const string XDocument = "System.Xml.Linq.XDocument";

        private static readonly Regex DelegateType = new Regex(@"^System\.(Func`\d+|Action|Action`\d+|Predicate`1|Comparison`1|Converter`2)$");

        private static readonly HashSet<string> SurfaceTypes = new HashSet<string>(StringComparer.Ordinal)
        {
            "IContextSurface", "IApi", "ISubscriptionKeyParameterNames", "IDeployment", "ILastError", "IOperation", "ProductState",
            "IGroup", "IProduct", "ISubscription", "IUserIdentity", "IUser", "IPrivateEndpointConnection", "IUrl", "IMessageBody",
            "IRequest", "IResponse", "BasicAuthCredentials", "Jwt", "ContextExtensions"
        };

        private static HashSet<string> Set(params string[] names) { return new HashSet<string>(names, StringComparer.Ordinal); }

        private sealed class Scan
        {
            public ModuleDefinition Module;
            public string GatewayAssembly;
            public readonly HashSet<string> Violations = new HashSet<string>(StringComparer.Ordinal);
            public readonly Queue<MethodDefinition> Work = new Queue<MethodDefinition>();
            public readonly HashSet<MethodDefinition> Seen = new HashSet<MethodDefinition>();
            public readonly HashSet<TypeDefinition> SeenTypes = new HashSet<TypeDefinition>();
        }

        private static void CheckAndBind(byte[] dll, List<Expression> exprs, List<Problem> problems)
        {
            ModuleDefinition module;
            using (var ms = new MemoryStream(dll))
                module = ModuleDefinition.ReadModule(ms);
            string gatewayName = typeof(ExpressionCompiler).Assembly.GetName().Name;
            var cls = module.GetType(Namespace + "." + ClassName);
            if (cls == null) { problems.Add(new Problem(null, "the compiled expressions lack their class")); return; }

            // Defense in depth: nothing in the assembly but the expression methods and what the
            // compiler generated for them (code that escaped its method would show up here).
            var strays = new List<string>();
            foreach (var t in module.GetTypes())
            {
                if (t.Name == "<Module>") { if (t.HasMethods) strays.Add("module initializer"); continue; }
                bool generated = IsGeneratedName(t) || t.DeclaringType != null && IsGeneratedName(t.DeclaringType);
                if (t != cls && !generated) strays.Add("type " + t.FullName);
                foreach (var m in t.Methods)
                {
                    if (m.IsPInvokeImpl || m.IsInternalCall || (m.ImplAttributes & Mono.Cecil.MethodImplAttributes.Runtime) != 0 && !IsGeneratedName(t))
                        strays.Add("native method " + m.FullName);
                    else if (t == cls && !m.Name.Contains("<") && m.Name != ".cctor" && !Regex.IsMatch(m.Name, @"^E\d+$"))
                        strays.Add("member " + m.Name);
                }
                if (t == cls)
                    foreach (var f in t.Fields)
                        if (!f.Name.Contains("<") && !f.Name.Contains("$")) strays.Add("field " + f.Name);
            }
            if (strays.Count > 0)
            {
                problems.Add(new Problem(null, "the compiled policy expressions declare code outside their methods (" + string.Join(", ", strays.Distinct()) + "); nothing is bound"));
                return;
            }

            // A static constructor of the class (compiler-generated caches, if any) runs before every
            // expression: it must pass the allow-list too.
            var cctor = cls.Methods.FirstOrDefault(m => m.Name == ".cctor");
            if (cctor != null)
            {
                var cs = new Scan { Module = module, GatewayAssembly = gatewayName };
                Enqueue(cs, cctor);
                while (cs.Work.Count > 0) ScanMethod(cs, cs.Work.Dequeue());
                if (cs.Violations.Count > 0)
                {
                    problems.Add(new Problem(null, "the compiled policy expressions' static initializer uses " + string.Join(", ", cs.Violations) + ", not allowed in APIM policy expressions; nothing is bound"));
                    return;
                }
            }

            Assembly asm = null;
            foreach (var e in exprs)
            {
                var md = cls.Methods.FirstOrDefault(m => m.Name == "E" + e.Id);
                if (md == null) { problems.Add(new Problem(e.Where, "internal: the compiled method E" + e.Id + " is missing")); continue; }
                var scan = new Scan { Module = module, GatewayAssembly = gatewayName };
                Enqueue(scan, md);
                while (scan.Work.Count > 0) ScanMethod(scan, scan.Work.Dequeue());
                if (scan.Violations.Count > 0)
                {
                    foreach (var v in scan.Violations.OrderBy(x => x, StringComparer.Ordinal))
                        problems.Add(new Problem(e.Where, v + " is not allowed in APIM policy expressions (not on APIM's list of allowed .NET types and members)"));
                    continue;
                }
                if (asm == null) asm = Assembly.Load(dll);
                var mi = asm.GetType(Namespace + "." + ClassName).GetMethod("E" + e.Id, BindingFlags.Public | BindingFlags.Static);
                e.Compiled = (Func<IContextSurface, object>)Delegate.CreateDelegate(typeof(Func<IContextSurface, object>), mi);
            }
        }

        private static bool IsGeneratedName(TypeReference t) { return t.Name.Contains("<") || t.Name.Contains("$"); }

        private static bool IsAnonymousType(TypeReference t)
        {
            return t.Name.StartsWith("<>__AnonType") || t.Name.StartsWith("<>f__AnonymousType");
        }

        private static void Enqueue(Scan s, MethodDefinition m)
        {
            if (m != null && s.Seen.Add(m)) s.Work.Enqueue(m);
        }

        private static void ScanMethod(Scan s, MethodDefinition m)
        {
            CheckType(s, m.ReturnType);
            foreach (var p in m.Parameters) CheckType(s, p.ParameterType);
            if (!m.HasBody) return;
            foreach (var v in m.Body.Variables) CheckType(s, v.VariableType);
            foreach (var h in m.Body.ExceptionHandlers)
                if (h.CatchType != null) CheckType(s, h.CatchType);
            foreach (var ins in m.Body.Instructions)
            {
                var op = ins.Operand;
                if (op == null) continue;
                var tr = op as TypeReference;
                if (tr != null) { CheckType(s, tr); continue; }
                var mr = op as MethodReference;
                if (mr != null) { CheckMethod(s, mr); continue; }
                var fr = op as FieldReference;
                if (fr != null) { CheckField(s, fr); continue; }
                if (op is CallSite) s.Violations.Add("an indirect call (calli)");
            }
        }

        /// <summary>Strips arrays, by-refs, pointers and modifiers; checks generic arguments on the way.</summary>
        private static TypeReference Core(Scan s, TypeReference t)
        {
            while (true)
            {
                var git = t as GenericInstanceType;
                if (git != null)
                {
                    foreach (var a in git.GenericArguments) CheckType(s, a);
                    t = git.ElementType;
                    continue;
                }
                var spec = t as TypeSpecification;
                if (spec != null)
                {
                    if (t is PointerType || t is FunctionPointerType) s.Violations.Add("a pointer type (" + t.FullName + ")");
                    t = spec.ElementType;
                    continue;
                }
                return t;
            }
        }

        private static bool InModule(Scan s, TypeReference t)
        {
            return t.Scope is ModuleDefinition && ((ModuleDefinition)t.Scope) == s.Module || t.Module == s.Module && t is TypeDefinition;
        }

        private static string Name(TypeReference t)
        {
            // nested types: Outer/Inner
            return t.DeclaringType != null ? Name(t.DeclaringType) + "/" + t.Name : (string.IsNullOrEmpty(t.Namespace) ? t.Name : t.Namespace + "." + t.Name);
        }

        private static bool IsSurface(Scan s, TypeReference t)
        {
            if (t.Namespace != "Gateway" || t.DeclaringType != null || !SurfaceTypes.Contains(t.Name)) return false;
            var an = t.Scope as AssemblyNameReference;
            return an != null && an.Name == s.GatewayAssembly;
        }

        private static bool TypeAllowed(Scan s, TypeReference t)
        {
            if (t is GenericParameter) return true;
            if (InModule(s, t)) return true;
            if (t.MetadataType == MetadataType.Void) return true;
            if (IsSurface(s, t)) return true;
            string n = Name(t);
            if (AllowedAll.Contains(n) || AllowedMembers.ContainsKey(n) || n == XDocument || DelegateType.IsMatch(n) || TypeOnly.Contains(n)) return true;
            // nested helper types of fully allowed types (List<T>.Enumerator, Dictionary<K,V>.KeyCollection, ...)
            for (var d = t.DeclaringType; d != null; d = d.DeclaringType)
                if (AllowedAll.Contains(Name(d))) return true;
            return false;
        }

        private static void CheckType(Scan s, TypeReference t)
        {
            if (t == null) return;
            t = Core(s, t);
            if (InModule(s, t))
            {
                EnterGeneratedType(s, t);
                return;
            }
            if (!TypeAllowed(s, t)) s.Violations.Add(Name(t));
        }

        /// <summary>A compiler-generated type of the expression assembly: scan all its methods (closures, iterators).</summary>
        private static void EnterGeneratedType(Scan s, TypeReference t)
        {
            var td = t as TypeDefinition ?? t.Resolve();
            if (td == null || !s.SeenTypes.Add(td)) return;
            if (IsAnonymousType(td)) return;
            if (td.Name == ClassName && td.Namespace == Namespace) return; // methods are entered when referenced
            foreach (var m in td.Methods) Enqueue(s, m);
            foreach (var f in td.Fields) CheckType(s, f.FieldType);
        }

        private static string MemberName(string name)
        {
            if (name.StartsWith("get_") || name.StartsWith("set_")) return name.Substring(4);
            return name;
        }

        private static void CheckMember(Scan s, TypeReference declaring, string member)
        {
            var t = Core(s, declaring);
            if (t is GenericParameter) return;
            if (InModule(s, t)) { EnterGeneratedType(s, t); return; }
            if (IsSurface(s, t)) return;
            string n = Name(t);
            string m = MemberName(member);
            if (AllowedAll.Contains(n)) return;
            for (var d = t.DeclaringType; d != null; d = d.DeclaringType)
                if (AllowedAll.Contains(Name(d))) return;
            if (n == XDocument)
            {
                if (m == "Load") s.Violations.Add(n + "::" + m);
                return;
            }
            if (DelegateType.IsMatch(n))
            {
                if (m != ".ctor" && m != "Invoke") s.Violations.Add(n + "::" + m);
                return;
            }
            HashSet<string> allowed;
            if (AllowedMembers.TryGetValue(n, out allowed))
            {
                if (!allowed.Contains(m) && !ObjectMembers.Contains(m)) s.Violations.Add(n + "::" + m);
                return;
            }
            // A type not on the list: only System.Object's members survive (inherited calls are
            // emitted against the declaring type, so this is rarely reached).
            s.Violations.Add(n + "::" + m);
        }

        private static void CheckMethod(Scan s, MethodReference mr)
        {
            var gim = mr as GenericInstanceMethod;
            if (gim != null)
            {
                foreach (var a in gim.GenericArguments) CheckType(s, a);
                mr = gim.ElementMethod;
            }
            var decl = Core(s, mr.DeclaringType);
            if (InModule(s, decl))
            {
                var md = mr as MethodDefinition ?? mr.Resolve();
                if (md == null) { s.Violations.Add("an unresolved method " + mr.FullName); return; }
                if (md.DeclaringType.Name == ClassName && md.DeclaringType.Namespace == Namespace)
                {
                    if (md.Name.Contains("<")) Enqueue(s, md); // lambdas hoisted into the class
                    // another E method: checked on its own
                    return;
                }
                EnterGeneratedType(s, decl);
                Enqueue(s, md);
                return;
            }
            CheckMember(s, mr.DeclaringType, mr.Name);
        }

        private static void CheckField(Scan s, FieldReference fr)
        {
            var decl = Core(s, fr.DeclaringType);
            if (InModule(s, decl))
            {
                EnterGeneratedType(s, decl);
                CheckType(s, fr.FieldType);
                return;
            }
            CheckMember(s, fr.DeclaringType, fr.Name);
        }
    }
}
