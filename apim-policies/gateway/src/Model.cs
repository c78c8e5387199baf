// The policy bundle as the gateway holds it after reading: documents,
// policy elements with their source positions, and the expressions in them.
using System;
using System.Collections.Generic;
using System.Linq;

namespace Gateway
{
    /// <summary>Where something was written: file (relative to the bundle root) and 1-based line.</summary>
    public sealed class SourceRef
    {
        public readonly string File;
        public readonly int Line;
        public SourceRef(string file, int line) { File = file; Line = line; }
        public override string ToString() { return File + ":" + Line; }
    }

    /// <summary>A policy expression: @( single expression ) or @{ statements }.</summary>
    public sealed class Expression
    {
        /// <summary>Unique in the bundle; the compiled method is named E{Id}.</summary>
        public int Id;
        /// <summary>The C# text between the delimiters, named values already substituted.</summary>
        public string Code;
        /// <summary>True for @{ ... } (statements that must return), false for @( ... ).</summary>
        public bool Multi;
        public SourceRef Where;
        /// <summary>Original line of each line of Code, when a multi-line named value shifted them; null otherwise (see ExpressionLines).</summary>
        internal int[] OriginalLines;
        /// <summary>Set by the compiler: evaluates the expression against a request's context.</summary>
        public Func<IContextSurface, object> Compiled;
    }

    /// <summary>An attribute value or element text: either a literal or exactly one expression.</summary>
    public sealed class Value
    {
        public string Literal;
        public Expression Expr;
        public SourceRef Where;
        public bool IsExpression { get { return Expr != null; } }
        public static Value Of(string literal, SourceRef where) { return new Value { Literal = literal, Where = where }; }
    }

    public sealed class Attr
    {
        public string Name;
        public Value Value;
        public SourceRef Where;
    }

    /// <summary>One element of a policy document.</summary>
    public sealed class PolicyNode
    {
        public string Name;
        public readonly List<Attr> Attributes = new List<Attr>();
        public readonly List<PolicyNode> Children = new List<PolicyNode>();
        /// <summary>Text content (trimmed of surrounding whitespace), or null when the element has none.</summary>
        public Value Text;
        public SourceRef Where;
        /// <summary>The section the element sits in: inbound, backend, outbound or on-error.</summary>
        public string Section;

        public Attr Attribute(string name)
        {
            return Attributes.FirstOrDefault(a => a.Name == name);
        }

        public IEnumerable<PolicyNode> ChildrenNamed(string name)
        {
            return Children.Where(c => c.Name == name);
        }

        public override string ToString() { return "<" + Name + "> at " + Where; }
    }

    /// <summary>One policy file: &lt;policies&gt; with its sections, or a &lt;fragment&gt;.</summary>
    public sealed class PolicyDocument
    {
        public string File;
        /// <summary>"policies" or "fragment".</summary>
        public string Kind;
        /// <summary>Section name to its element (inbound, backend, outbound, on-error); a section not written is absent.</summary>
        public readonly Dictionary<string, PolicyNode> Sections = new Dictionary<string, PolicyNode>();
        /// <summary>For a fragment: its policies.</summary>
        public PolicyNode Root;
    }

    public sealed class OperationDef
    {
        public string Name;
        /// <summary>The manifest's displayName (null when none was given: BundleLoader.DisplayName answers Name then).</summary>
        public string DisplayName;
        public string Method;
        /// <summary>URL template relative to the API path, e.g. "/items/{id}" or "/*".</summary>
        public string UrlTemplate;
        public PolicyDocument Policy;
        /// <summary>
        /// The policy file the manifest names for the operation (relative to the bundle root, as in
        /// SourceRef.File), set even when the file could not be read or parsed (Policy is null then);
        /// null when the operation has no policy.
        /// </summary>
        public string PolicyFile;
    }

    public sealed class ApiDef
    {
        public string Name;
        /// <summary>The manifest's displayName (null when none was given: BundleLoader.DisplayName answers Name then).</summary>
        public string DisplayName;
        /// <summary>Path prefix under the gateway origin, without leading or trailing slash ("" for the root).</summary>
        public string Path;
        /// <summary>Backend base URL (service URL), may be empty when every operation returns or sets a backend.</summary>
        public string ServiceUrl;
        public PolicyDocument Policy;
        /// <summary>The API-scope policy file the manifest names (as OperationDef.PolicyFile); null when none.</summary>
        public string PolicyFile;
        public readonly List<OperationDef> Operations = new List<OperationDef>();
    }

    /// <summary>Everything the gateway serves, read from the manifest.</summary>
    public sealed class Bundle
    {
        /// <summary>Directory the manifest's relative paths are resolved against.</summary>
        public string Root;
        public PolicyDocument Global;
        /// <summary>The global policy file the manifest names (as OperationDef.PolicyFile); null when none.</summary>
        public string GlobalFile;
        public readonly List<ApiDef> Apis = new List<ApiDef>();
        /// <summary>Fragment id to its document (include-fragment).</summary>
        public readonly Dictionary<string, PolicyDocument> Fragments = new Dictionary<string, PolicyDocument>();
        /// <summary>
        /// Fragment id to the file the manifest names for it (relative to the bundle root), for every
        /// valid id, including fragments whose file could not be read or parsed (absent from Fragments).
        /// </summary>
        public readonly Dictionary<string, string> FragmentFiles = new Dictionary<string, string>();
        public readonly List<Expression> Expressions = new List<Expression>();
        public readonly Dictionary<string, string> NamedValues = new Dictionary<string, string>();
        /// <summary>Time ExpressionCompiler.Compile took for this bundle (compiler, IL check and binding).</summary>
        public TimeSpan ExpressionCompileTime;
    }

    /// <summary>A problem with the bundle itself (unknown element, bad attribute, expression that does not compile, ...).</summary>
    public sealed class Problem
    {
        public SourceRef Where;
        public string Message;
        public Problem(SourceRef where, string message) { Where = where; Message = message; }
        public override string ToString() { return (Where != null ? Where + ": " : "") + Message; }
    }

    /// <summary>Thrown when the bundle cannot be loaded; carries every problem found.</summary>
    public sealed class BundleException : Exception
    {
        public readonly List<Problem> Problems;
        public BundleException(List<Problem> problems)
            : base(string.Join("\n", problems.Select(p => p.ToString()))) { Problems = problems; }
    }

    /// <summary>
    /// A runtime failure inside a policy. The pipeline catches it, fills
    /// context.LastError from it and runs on-error, as APIM does.
    /// </summary>
    public class PolicyException : Exception
    {
        /// <summary>LastError.Source: the policy element name (e.g. "validate-jwt") or "configuration".</summary>
        public readonly string Source;
        /// <summary>LastError.Reason, e.g. "ExpressionValueEvaluationFailure", "TokenNotPresent".</summary>
        public readonly string Reason;
        public readonly SourceRef Where;
        public PolicyException(string source, string reason, string message, SourceRef where, Exception inner = null)
            : base(message, inner) { Source = source; Reason = reason; Where = where; }
    }
}
