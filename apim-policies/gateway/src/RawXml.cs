// A parser for APIM's "rawxml" policy format.
//
// Policy files look like XML, but an expression that is a whole attribute value
// or a whole element text is written raw: it may hold unescaped '"', '<', '>'
// and '&', e.g. value="@(context.Request.Headers.GetValueOrDefault("A",""))".
// So: when an attribute value starts with @( or @{, or element text starts
// (after whitespace) with @( or @{, the expression is scanned to its balanced
// closing delimiter, honouring C# string literals ("...", @"...", $"..." with
// nested holes, $@"..."), char literals and comments. Its text is kept exactly
// as written (no entity decoding: it is raw C#). Then the attribute's closing
// quote, or the element's end tag, must follow.
//
// Everywhere else normal XML rules apply: entities (&lt; &gt; &amp; &quot;
// &apos; and &#...;) are decoded in literals, comments are skipped, CDATA is
// text, no DTDs or processing instructions, an optional <?xml ...?> prolog.
// Literal text that merely contains an expression (abc@(x)) stays a literal,
// as in APIM, where only whole-value expressions are evaluated.
//
// <set-body> is special: its content is the body, so when it holds markup
// (an XML body) its Text is the raw inner markup, not child elements.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Text;

namespace Gateway
{
    public static class RawXml
    {
        /// <summary>Elements whose content is a message body: markup inside them is kept as literal text.</summary>
        public static readonly HashSet<string> RawContentElements = new HashSet<string>(StringComparer.Ordinal) { "set-body" };

        public static readonly string[] SectionNames = { "inbound", "backend", "outbound", "on-error" };

        /// <summary>Parses the root element of a file. Returns null (with problems) when the file is malformed.</summary>
        public static PolicyNode ParseElement(SourceText src, List<Problem> problems)
        {
            try
            {
                return new RawXmlParser(src, problems).ParseRoot();
            }
            catch (RawXmlParser.Fail f)
            {
                problems.Add(f.Problem);
                return null;
            }
            catch (Exception e)
            {
                problems.Add(new Problem(new SourceRef(src.File, 1), "cannot parse the policy file: " + e.Message));
                return null;
            }
        }

        /// <summary>Parses a policy file without named values.</summary>
        public static PolicyDocument ParseDocument(string file, string text, List<Problem> problems, string expectedKind = null)
        {
            return ParseDocument(SourceText.Plain(file, text), problems, expectedKind);
        }

        /// <summary>
        /// Parses a whole document: &lt;policies&gt; with at most one each of &lt;inbound&gt;, &lt;backend&gt;,
        /// &lt;outbound&gt;, &lt;on-error&gt; (Section set on every node inside), or a &lt;fragment&gt;.
        /// expectedKind "policies" or "fragment" restricts the root; null accepts either.
        /// Returns null when the file cannot be parsed at all; structural problems are reported
        /// and the document is still returned.
        /// </summary>
        public static PolicyDocument ParseDocument(SourceText src, List<Problem> problems, string expectedKind = null)
        {
            var root = ParseElement(src, problems);
            if (root == null) return null;
            var doc = new PolicyDocument { File = src.File, Root = root };
            if (root.Name != "policies" && root.Name != "fragment")
            {
                problems.Add(new Problem(root.Where, "the root element must be <" + (expectedKind ?? "policies") + ">, not <" + root.Name + ">"));
                return null;
            }
            if (expectedKind != null && root.Name != expectedKind)
            {
                problems.Add(new Problem(root.Where, expectedKind == "fragment"
                    ? "a policy fragment file must have the root element <fragment>, not <" + root.Name + ">"
                    : "a policy file must have the root element <policies>, not <" + root.Name + ">"));
                return null;
            }
            doc.Kind = root.Name;
            foreach (var a in root.Attributes)
                problems.Add(new Problem(a.Where, "<" + root.Name + "> takes no attributes (found '" + a.Name + "')"));
            if (root.Text != null)
                problems.Add(new Problem(root.Text.Where, "<" + root.Name + "> cannot contain text"));
            if (root.Name == "policies")
            {
                foreach (var section in root.Children)
                {
                    if (!SectionNames.Contains(section.Name))
                    {
                        problems.Add(new Problem(section.Where, "<policies> may contain only <inbound>, <backend>, <outbound> and <on-error>, not <" + section.Name + ">"));
                        continue;
                    }
                    if (doc.Sections.ContainsKey(section.Name))
                    {
                        problems.Add(new Problem(section.Where, "section <" + section.Name + "> appears more than once (first at line " + doc.Sections[section.Name].Where.Line + ")"));
                        continue;
                    }
                    doc.Sections[section.Name] = section;
                    foreach (var a in section.Attributes)
                        problems.Add(new Problem(a.Where, "<" + section.Name + "> takes no attributes (found '" + a.Name + "')"));
                    if (section.Text != null)
                        problems.Add(new Problem(section.Text.Where, "<" + section.Name + "> cannot contain text, only policies"));
                    SetSection(section, section.Name);
                }
            }
            else
            {
                foreach (var c in root.Children)
                    if (SectionNames.Contains(c.Name))
                        problems.Add(new Problem(c.Where, "a policy fragment cannot contain a section element (<" + c.Name + ">)"));
            }
            return doc;
        }

        private static void SetSection(PolicyNode n, string section)
        {
            n.Section = section;
            foreach (var c in n.Children) SetSection(c, section);
        }

        /// <summary>Every node of a document (sections, policies and their sub-elements), in document order.</summary>
        public static IEnumerable<PolicyNode> AllNodes(PolicyNode root)
        {
            if (root == null) yield break;
            yield return root;
            foreach (var c in root.Children)
                foreach (var d in AllNodes(c)) yield return d;
        }

        /// <summary>Every expression of a document in document order (attributes before text before children).</summary>
        public static IEnumerable<Expression> Expressions(PolicyNode root)
        {
            foreach (var n in AllNodes(root))
            {
                foreach (var a in n.Attributes)
                    if (a.Value != null && a.Value.IsExpression) yield return a.Value.Expr;
                if (n.Text != null && n.Text.IsExpression) yield return n.Text.Expr;
            }
        }
    }

    /// <summary>Original lines of the lines of an expression's Code, when a multi-line named value shifted them.</summary>
    internal static class ExpressionLines
    {
        public static void Set(Expression e, int[] lines) { e.OriginalLines = lines; }

        /// <summary>The original line of line k (0-based) of e.Code.</summary>
        public static int LineOf(Expression e, int k)
        {
            var lines = e.OriginalLines;
            if (lines != null)
            {
                if (k < 0) return lines[0];
                return k < lines.Length ? lines[k] : lines[lines.Length - 1] + (k - lines.Length + 1);
            }
            return e.Where.Line + Math.Max(0, k);
        }
    }

    internal sealed class RawXmlParser
    {
        internal sealed class Fail : Exception
        {
            public readonly Problem Problem;
            public Fail(Problem p) : base(p.Message) { Problem = p; }
        }

        private readonly SourceText src;
        private readonly string s;
        private readonly List<Problem> problems;
        private int pos;

        public RawXmlParser(SourceText src, List<Problem> problems)
        {
            this.src = src;
            s = src.Text;
            this.problems = problems;
        }

        private SourceRef At(int offset) { return new SourceRef(src.File, src.LineAt(offset)); }
        private Fail Error(int offset, string message) { return new Fail(new Problem(At(offset), message)); }
        private bool Eof { get { return pos >= s.Length; } }
        private bool Ahead(string t) { return AheadAt(pos, t); }
        private bool AheadAt(int i, string t) { return i + t.Length <= s.Length && string.CompareOrdinal(s, i, t, 0, t.Length) == 0; }

        private static bool IsWs(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
        private bool SkipWs() { int p0 = pos; while (!Eof && IsWs(s[pos])) pos++; return pos > p0; }

        private static bool IsNameStart(char c) { return char.IsLetter(c) || c == '_' || c == ':'; }
        private static bool IsNameChar(char c) { return char.IsLetterOrDigit(c) || c == '_' || c == ':' || c == '-' || c == '.'; }

        private string ReadName()
        {
            if (Eof || !IsNameStart(s[pos])) return null;
            int start = pos;
            while (!Eof && IsNameChar(s[pos])) pos++;
            return s.Substring(start, pos - start);
        }

        private string Describe(int i)
        {
            if (i >= s.Length) return "end of file";
            char c = s[i];
            if (c == '\n') return "end of line";
            return "'" + c + "'";
        }

        public PolicyNode ParseRoot()
        {
            pos = 0;
            if (!Eof && s[0] == '\uFEFF') pos = 1;
            bool first = true;
            while (true)
            {
                SkipWs();
                if (Ahead("<?xml") && pos + 5 < s.Length && (IsWs(s[pos + 5]) || s[pos + 5] == '?'))
                {
                    if (!first) throw Error(pos, "the <?xml ...?> declaration must come first in the file");
                    int end = s.IndexOf("?>", pos, StringComparison.Ordinal);
                    if (end < 0) throw Error(pos, "the <?xml declaration is not closed with ?>");
                    pos = end + 2;
                }
                else if (!SkipMisc()) break;
                first = false;
            }
            if (Eof) throw Error(pos, "the file holds no element");
            if (s[pos] != '<') throw Error(pos, "expected '<' to start the root element, found " + Describe(pos));
            var root = ParseElementAt();
            while (true)
            {
                SkipWs();
                if (!SkipMisc()) break;
            }
            if (!Eof) throw Error(pos, "unexpected content after the end of the root element <" + root.Name + ">");
            return root;
        }

        /// <summary>Skips a comment; rejects DTDs and processing instructions. False when nothing was skipped.</summary>
        private bool SkipMisc()
        {
            if (Ahead("<!--")) { SkipComment(); return true; }
            if (Ahead("<!DOCTYPE") || Ahead("<!doctype")) throw Error(pos, "DTDs (<!DOCTYPE ...>) are not allowed in policy files");
            if (Ahead("<?")) throw Error(pos, "processing instructions (<?...?>) are not allowed in policy files");
            return false;
        }

        private void SkipComment()
        {
            int start = pos;
            int end = s.IndexOf("-->", pos + 4, StringComparison.Ordinal);
            if (end < 0) throw Error(start, "comment <!-- is not closed with -->");
            pos = end + 3;
        }

        private PolicyNode ParseElementAt()
        {
            int start = pos;
            pos++; // '<'
            string name = ReadName();
            if (name == null) throw Error(pos, "expected an element name after '<', found " + Describe(pos));
            var node = new PolicyNode { Name = name, Where = At(start) };
            // attributes
            while (true)
            {
                bool ws = SkipWs();
                if (Eof) throw Error(start, "the start tag <" + name + " is not closed");
                char c = s[pos];
                if (c == '/')
                {
                    if (pos + 1 < s.Length && s[pos + 1] == '>') { pos += 2; return node; }
                    throw Error(pos, "expected '/>' in tag <" + name + ">, found " + Describe(pos + 1));
                }
                if (c == '>') { pos++; break; }
                if (!ws) throw Error(pos, "unexpected " + Describe(pos) + " in tag <" + name + "> (attributes must be separated by whitespace)");
                int attrStart = pos;
                string an = ReadName();
                if (an == null) throw Error(pos, "unexpected " + Describe(pos) + " in tag <" + name + ">");
                SkipWs();
                if (Eof || s[pos] != '=') throw Error(pos, "attribute '" + an + "' of <" + name + "> has no value (expected '=')");
                pos++;
                SkipWs();
                if (Eof || (s[pos] != '"' && s[pos] != '\'')) throw Error(pos, "the value of attribute '" + an + "' must be quoted");
                char quote = s[pos];
                pos++;
                Value v = ReadAttrValue(quote, an, name);
                if (node.Attributes.Any(a => a.Name == an))
                    problems.Add(new Problem(At(attrStart), "duplicate attribute '" + an + "' on <" + name + ">"));
                else
                    node.Attributes.Add(new Attr { Name = an, Value = v, Where = At(attrStart) });
            }
            ParseContent(node, start);
            return node;
        }

        private Value ReadAttrValue(char quote, string attr, string element)
        {
            int vstart = pos;
            if (IsExpressionStart(pos))
            {
                var e = ScanExpression(pos);
                if (Eof || s[pos] != quote)
                {
                    // Not a whole-value expression after all? Only if the quote closes later
                    // with no expression delimiters: report clearly either way.
                    throw Error(pos, "expected the closing " + quote + " of attribute '" + attr + "' right after the expression that starts at line "
                        + e.Where.Line + " (an expression must be the whole attribute value), found " + Describe(pos));
                }
                pos++;
                return new Value { Expr = e, Where = e.Where };
            }
            var sb = new StringBuilder();
            while (true)
            {
                if (Eof) throw Error(vstart, "the value of attribute '" + attr + "' of <" + element + "> is not closed");
                char c = s[pos];
                if (c == quote) { pos++; break; }
                if (c == '<') throw Error(pos, "'<' is not allowed in the literal value of attribute '" + attr + "' (write &lt;, or make the whole value an expression)");
                if (c == '&') { sb.Append(ReadEntity()); continue; }
                sb.Append(c == '\n' || c == '\t' || c == '\r' ? ' ' : c);
                pos++;
            }
            return Value.Of(sb.ToString(), At(vstart));
        }

        private string ReadEntity()
        {
            int start = pos;
            int semi = s.IndexOf(';', pos);
            if (semi < 0 || semi - pos > 12) throw Error(start, "'&' must be written as &amp; in literal text (or be part of an entity such as &lt;)");
            string ent = s.Substring(pos + 1, semi - pos - 1);
            pos = semi + 1;
            switch (ent)
            {
                case "lt": return "<";
                case "gt": return ">";
                case "amp": return "&";
                case "quot": return "\"";
                case "apos": return "'";
            }
            if (ent.StartsWith("#"))
            {
                int code;
                bool ok = ent.StartsWith("#x")
                    ? int.TryParse(ent.Substring(2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out code)
                    : int.TryParse(ent.Substring(1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out code);
                if (ok && code > 0 && code <= 0x10FFFF && !(code >= 0xD800 && code <= 0xDFFF))
                    return char.ConvertFromUtf32(code);
                throw Error(start, "invalid character reference &" + ent + ";");
            }
            throw Error(start, "unknown entity &" + ent + "; (only &lt; &gt; &amp; &quot; &apos; and &#...; are defined)");
        }

        private bool IsExpressionStart(int i)
        {
            return i + 1 < s.Length && s[i] == '@' && (s[i + 1] == '(' || s[i + 1] == '{');
        }

        private void ParseContent(PolicyNode node, int start)
        {
            string name = node.Name;
            bool raw = RawXml.RawContentElements.Contains(name);
            int contentStart = pos;
            var text = new StringBuilder();
            int textStart = -1; // offset of the first non-whitespace text character
            Expression expr = null;
            bool markup = false;
            int contentEnd;
            while (true)
            {
                if (Eof) throw Error(start, "element <" + name + "> is not closed (no </" + name + ">)");
                char c = s[pos];
                if (c == '<')
                {
                    if (Ahead("</"))
                    {
                        contentEnd = pos;
                        int endTag = pos;
                        pos += 2;
                        string en = ReadName();
                        if (en == null) throw Error(pos, "expected an element name after '</', found " + Describe(pos));
                        SkipWs();
                        if (Eof || s[pos] != '>') throw Error(pos, "expected '>' to close </" + en + ", found " + Describe(pos));
                        pos++;
                        if (en != name)
                            throw Error(endTag, "end tag </" + en + "> does not match the start tag <" + name + "> at line " + node.Where.Line);
                        break;
                    }
                    if (Ahead("<!--")) { SkipComment(); continue; }
                    if (Ahead("<![CDATA["))
                    {
                        int cs = pos;
                        int end = s.IndexOf("]]>", pos + 9, StringComparison.Ordinal);
                        if (end < 0) throw Error(cs, "<![CDATA[ section is not closed with ]]>");
                        string cdata = s.Substring(pos + 9, end - pos - 9);
                        if (expr != null) throw Error(cs, "unexpected content after the expression in <" + name + "> (an expression must be the whole element text)");
                        if (textStart < 0 && cdata.Trim().Length > 0) textStart = pos + 9 + (cdata.Length - cdata.TrimStart().Length);
                        text.Append(cdata);
                        pos = end + 3;
                        continue;
                    }
                    if (Ahead("<!")) throw Error(pos, "markup declarations (<!...>) are not allowed in policy files");
                    if (Ahead("<?")) throw Error(pos, "processing instructions (<?...?>) are not allowed in policy files");
                    if (expr != null) throw Error(pos, "unexpected element after the expression in <" + name + "> (an expression must be the whole element text)");
                    var child = ParseElementAt();
                    node.Children.Add(child);
                    markup = true;
                    continue;
                }
                if (expr != null)
                {
                    if (IsWs(c)) { pos++; continue; }
                    throw Error(pos, "expected </" + name + "> right after the expression that starts at line " + expr.Where.Line
                        + " (an expression must be the whole element text), found " + Describe(pos));
                }
                if (c == '@' && IsExpressionStart(pos) && textStart < 0 && node.Children.Count == 0)
                {
                    expr = ScanExpression(pos);
                    continue;
                }
                if (c == '&')
                {
                    int es = pos;
                    string decoded = ReadEntity();
                    if (textStart < 0) textStart = es;
                    text.Append(decoded);
                    continue;
                }
                if (textStart < 0 && !IsWs(c)) textStart = pos;
                text.Append(c);
                pos++;
            }

            if (expr != null)
            {
                node.Text = new Value { Expr = expr, Where = expr.Where };
                return;
            }
            if (raw && markup)
            {
                // The body is the markup as written (an XML payload): keep it verbatim.
                string inner = s.Substring(contentStart, contentEnd - contentStart);
                string trimmed = inner.Trim();
                int lead = inner.Length - inner.TrimStart().Length;
                node.Children.Clear();
                node.Text = Value.Of(trimmed, At(contentStart + lead));
                return;
            }
            string t = text.ToString().Trim();
            if (t.Length > 0) node.Text = Value.Of(t, At(textStart < 0 ? contentStart : textStart));
        }

        // ---- expressions ----

        /// <summary>At s[at] == '@' followed by '(' or '{': scans to the balanced end and returns the expression; pos is after it.</summary>
        private Expression ScanExpression(int at)
        {
            char open = s[at + 1];
            char close = open == '(' ? ')' : '}';
            int codeStart = at + 2;
            int end = ScanBalanced(codeStart, close, at);
            string code = s.Substring(codeStart, end - 1 - codeStart);
            pos = end;
            var e = new Expression { Code = code, Multi = open == '{', Where = At(at) };
            // Record the original line of each code line when they are not consecutive
            // (a named value with newlines was substituted inside the code).
            var lines = new List<int> { src.LineAt(codeStart) };
            bool shifted = src.LineAt(codeStart) != e.Where.Line;
            for (int i = codeStart; i < end - 1; i++)
            {
                if (s[i] == '\n')
                {
                    int l = src.LineAt(i + 1);
                    if (l != lines[lines.Count - 1] + 1) shifted = true;
                    lines.Add(l);
                }
            }
            if (shifted) ExpressionLines.Set(e, lines.ToArray());
            return e;
        }

        /// <summary>Scans C# code from i until the delimiter closer balances; returns the offset after it.</summary>
        private int ScanBalanced(int i, char closer, int exprStart)
        {
            var stack = new Stack<char>();
            stack.Push(closer);
            while (i < s.Length)
            {
                char c = s[i];
                switch (c)
                {
                    case '(': stack.Push(')'); i++; continue;
                    case '[': stack.Push(']'); i++; continue;
                    case '{': stack.Push('}'); i++; continue;
                    case ')':
                    case ']':
                    case '}':
                        if (stack.Peek() != c)
                            throw Error(i, "unbalanced '" + c + "' in the expression that starts at line " + src.LineAt(exprStart) + " (expected '" + stack.Peek() + "')");
                        stack.Pop();
                        i++;
                        if (stack.Count == 0) return i;
                        continue;
                    case '"':
                        i = SkipString(i + 1, false, false, exprStart);
                        continue;
                    case '\'':
                        i = SkipChar(i + 1, exprStart);
                        continue;
                    case '@':
                        if (i + 1 < s.Length && s[i + 1] == '"') { i = SkipString(i + 2, true, false, exprStart); continue; }
                        if (i + 2 < s.Length && s[i + 1] == '$' && s[i + 2] == '"') { i = SkipString(i + 3, true, true, exprStart); continue; }
                        i++;
                        continue;
                    case '$':
                        if (i + 1 < s.Length && s[i + 1] == '"') { i = SkipString(i + 2, false, true, exprStart); continue; }
                        if (i + 2 < s.Length && s[i + 1] == '@' && s[i + 2] == '"') { i = SkipString(i + 3, true, true, exprStart); continue; }
                        i++;
                        continue;
                    case '/':
                        if (i + 1 < s.Length && s[i + 1] == '/')
                        {
                            int nl = s.IndexOf('\n', i);
                            if (nl < 0) throw Error(exprStart, "the expression that starts here is not closed: missing '" + stack.Peek() + "' (a // comment runs to the end of the file)");
                            i = nl + 1;
                            continue;
                        }
                        if (i + 1 < s.Length && s[i + 1] == '*')
                        {
                            int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                            if (end < 0) throw Error(i, "/* comment in the expression that starts at line " + src.LineAt(exprStart) + " is not closed");
                            i = end + 2;
                            continue;
                        }
                        i++;
                        continue;
                    default:
                        i++;
                        continue;
                }
            }
            throw Error(exprStart, "the expression that starts here is not closed: missing '" + stack.Peek() + "'");
        }

        /// <summary>From just after the opening quote of a string literal; returns the offset after its closing quote.</summary>
        private int SkipString(int i, bool verbatim, bool interpolated, int exprStart)
        {
            int start = i;
            while (i < s.Length)
            {
                char c = s[i];
                if (!verbatim && c == '\\') { i += 2; continue; }
                if (!verbatim && c == '\n')
                    throw Error(i, "newline in a string literal in the expression that starts at line " + src.LineAt(exprStart) + " (the string is not closed)");
                if (c == '"')
                {
                    if (verbatim && i + 1 < s.Length && s[i + 1] == '"') { i += 2; continue; }
                    return i + 1;
                }
                if (interpolated && c == '{')
                {
                    if (i + 1 < s.Length && s[i + 1] == '{') { i += 2; continue; }
                    i = ScanBalanced(i + 1, '}', exprStart);
                    continue;
                }
                if (interpolated && c == '}' && i + 1 < s.Length && s[i + 1] == '}') { i += 2; continue; }
                i++;
            }
            throw Error(start - 1, "string literal in the expression that starts at line " + src.LineAt(exprStart) + " is not closed");
        }

        /// <summary>From just after the opening quote of a char literal; returns the offset after its closing quote.</summary>
        private int SkipChar(int i, int exprStart)
        {
            int start = i;
            while (i < s.Length)
            {
                char c = s[i];
                if (c == '\\') { i += 2; continue; }
                if (c == '\'') return i + 1;
                if (c == '\n') break;
                i++;
            }
            throw Error(start - 1, "character literal in the expression that starts at line " + src.LineAt(exprStart) + " is not closed");
        }
    }
}
