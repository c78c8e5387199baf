// Named values: {{name}} references replaced in the raw policy text before
// parsing, as APIM does before it compiles expressions.
//
// Lines: a value may contain newlines (a PEM key, a pretty-printed JWKS). The
// substituted text carries, for every character, the line of the original
// file it came from (a value's characters all map to the line of its
// reference), so elements, attributes and expressions keep their real line
// numbers however many lines a value spans.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>Text to parse, with the original 1-based line of every character.</summary>
    public sealed class SourceText
    {
        public readonly string File;
        public readonly string Text;
        private readonly int[] lines; // lines[i] = original line of Text[i]; lines[Text.Length] = line at end

        public SourceText(string file, string text, int[] lineOfEachChar)
        {
            File = file;
            Text = text;
            if (lineOfEachChar == null || lineOfEachChar.Length != text.Length + 1)
                throw new ArgumentException("line map must have Text.Length + 1 entries");
            lines = lineOfEachChar;
        }

        /// <summary>Plain text (no substitution): lines counted from the text itself.</summary>
        public static SourceText Plain(string file, string text)
        {
            text = NamedValues.NormalizeNewlines(text);
            var map = new int[text.Length + 1];
            int line = 1;
            for (int i = 0; i < text.Length; i++) { map[i] = line; if (text[i] == '\n') line++; }
            map[text.Length] = line;
            return new SourceText(file, text, map);
        }

        /// <summary>The original line of the character at offset (clamped to the text).</summary>
        public int LineAt(int offset)
        {
            if (offset < 0) offset = 0;
            if (offset > Text.Length) offset = Text.Length;
            return lines[offset];
        }
    }

    public static class NamedValues
    {
        /// <summary>Characters allowed in a named value's name.</summary>
        public static readonly Regex NamePattern = new Regex(@"^[A-Za-z0-9._-]{1,256}$");
        /// <summary>APIM's maximum named value length.</summary>
        public const int MaxValueLength = 4096;

        public static string NormalizeNewlines(string text)
        {
            if (text.IndexOf('\r') < 0) return text;
            return text.Replace("\r\n", "\n").Replace('\r', '\n');
        }

        /// <summary>
        /// Reads a JSON object {"name": "value", ...}. Numbers and booleans are taken as their
        /// JSON text; anything else, a bad name, an empty or too long value is a problem.
        /// fileLabel is how problems name the file (defaults to the path).
        /// </summary>
        public static Dictionary<string, string> Load(string path, List<Problem> problems, string fileLabel = null)
        {
            var result = new Dictionary<string, string>(StringComparer.Ordinal);
            string label = fileLabel ?? path;
            string text;
            try { text = System.IO.File.ReadAllText(path); }
            catch (Exception e)
            {
                problems.Add(new Problem(new SourceRef(label, 1), "cannot read the named values file: " + e.Message));
                return result;
            }
            JToken root;
            try { root = JToken.Parse(text); }
            catch (JsonReaderException e)
            {
                problems.Add(new Problem(new SourceRef(label, Math.Max(1, e.LineNumber)), "named values file is not valid JSON: " + e.Message));
                return result;
            }
            var obj = root as JObject;
            if (obj == null)
            {
                problems.Add(new Problem(new SourceRef(label, LineOf(root)), "named values file must hold a JSON object {\"name\": \"value\", ...}"));
                return result;
            }
            foreach (var p in obj.Properties())
            {
                var where = new SourceRef(label, LineOf(p));
                if (!NamePattern.IsMatch(p.Name))
                {
                    problems.Add(new Problem(where, "named value name \"" + p.Name + "\" is invalid: use 1-256 letters, digits, '.', '-' or '_'"));
                    continue;
                }
                string v;
                switch (p.Value.Type)
                {
                    case JTokenType.String: v = (string)p.Value; break;
                    case JTokenType.Integer:
                    case JTokenType.Float:
                    case JTokenType.Boolean: v = p.Value.ToString(Formatting.None); break;
                    default:
                        problems.Add(new Problem(where, "named value \"" + p.Name + "\" must be a string"));
                        continue;
                }
                if (v.Trim().Length == 0)
                    problems.Add(new Problem(where, "named value \"" + p.Name + "\" is empty; APIM requires a value that is not empty or only whitespace"));
                else if (v.Length > MaxValueLength)
                    problems.Add(new Problem(where, "named value \"" + p.Name + "\" is " + v.Length + " characters long; APIM allows at most " + MaxValueLength));
                result[p.Name] = v;
            }
            return result;
        }

        internal static int LineOf(JToken t)
        {
            var li = t as IJsonLineInfo;
            return li != null && li.HasLineInfo() && li.LineNumber > 0 ? li.LineNumber : 1;
        }

        /// <summary>
        /// Replaces every {{name}} (name: letters, digits, '.', '-', '_') in text. An unknown name is a
        /// problem at the line of the reference and the reference is left as written. Values are
        /// inserted as they are: a {{x}} inside a value is not substituted (no nesting).
        /// </summary>
        public static SourceText Substitute(string file, string text, IDictionary<string, string> values, List<Problem> problems)
        {
            text = NormalizeNewlines(text);
            var sb = new StringBuilder(text.Length);
            var map = new List<int>(text.Length + 1);
            int line = 1;
            int i = 0;
            while (i < text.Length)
            {
                if (text[i] == '{' && i + 1 < text.Length && text[i + 1] == '{')
                {
                    int end;
                    string name = MatchReference(text, i, out end);
                    if (name != null)
                    {
                        string v;
                        if (values != null && values.TryGetValue(name, out v))
                        {
                            sb.Append(v);
                            for (int k = 0; k < v.Length; k++) map.Add(line);
                            i = end;
                            continue;
                        }
                        problems.Add(new Problem(new SourceRef(file, line), "unknown named value {{" + name + "}}"));
                    }
                }
                sb.Append(text[i]);
                map.Add(line);
                if (text[i] == '\n') line++;
                i++;
            }
            map.Add(line);
            return new SourceText(file, sb.ToString(), map.ToArray());
        }

        /// <summary>Substitutes in a short value (e.g. a manifest field); problems name where.</summary>
        public static string SubstituteString(string value, IDictionary<string, string> values, SourceRef where, List<Problem> problems)
        {
            if (value == null) return null;
            var sb = new StringBuilder();
            int i = 0;
            while (i < value.Length)
            {
                if (value[i] == '{' && i + 1 < value.Length && value[i + 1] == '{')
                {
                    int end;
                    string name = MatchReference(value, i, out end);
                    if (name != null)
                    {
                        string v;
                        if (values != null && values.TryGetValue(name, out v)) { sb.Append(v); i = end; continue; }
                        problems.Add(new Problem(where, "unknown named value {{" + name + "}}"));
                    }
                }
                sb.Append(value[i]);
                i++;
            }
            return sb.ToString();
        }

        /// <summary>At text[i..] == "{{": the name when a whole reference {{name}} starts here, else null.</summary>
        private static string MatchReference(string text, int i, out int end)
        {
            end = i;
            int j = i + 2;
            while (j < text.Length && IsNameChar(text[j])) j++;
            if (j == i + 2 || j + 1 >= text.Length || text[j] != '}' || text[j + 1] != '}') return null;
            if (j - (i + 2) > 256) return null;
            end = j + 2;
            return text.Substring(i + 2, j - (i + 2));
        }

        private static bool IsNameChar(char c)
        {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
        }
    }
}
