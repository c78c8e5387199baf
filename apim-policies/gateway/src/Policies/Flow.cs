// Control-flow policies: base, include-fragment, set-variable, choose, return-response, trace.
using System;
using System.Collections.Generic;
using System.Linq;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    /// <summary>base: api-management-howto-policies.md. Runs the broader scope's same section (the pipeline does the work).</summary>
    public sealed class BasePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var p = ExecState.Of(exec).Pipeline;
            if (p == null) throw P.Config(node, "<base/> outside the pipeline");
            p.RunBase(exec);
        }
    }

    /// <summary>include-fragment-policy.md: inserts the fragment's policies at this position (same scope and section).</summary>
    public sealed class IncludeFragmentPolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var id = P.LiteralAttr(node, "fragment-id");
            if (string.IsNullOrEmpty(id)) throw P.Config(node, "attribute fragment-id is required");
            PolicyDocument frag;
            var bundle = exec.Services.Bundle;
            if (bundle == null || !bundle.Fragments.TryGetValue(id, out frag) || frag == null)
            {
                string file;
                if (bundle != null && bundle.FragmentFiles.TryGetValue(id, out file))
                    throw P.Config(node, "policy fragment \"" + id + "\" (" + file + ") could not be loaded; `check` reports its problems");
                throw P.Config(node, "no policy fragment with id \"" + id + "\"");
            }
            ExecState.Of(exec).Pipeline.RunFragment(exec, node, frag);
        }
    }

    /// <summary>set-variable-policy.md: stores the evaluated value; a literal is a string. Only the documented types may be stored.</summary>
    public sealed class SetVariablePolicy : IPolicy
    {
        private static readonly HashSet<Type> Allowed = new HashSet<Type>
        {
            typeof(bool), typeof(sbyte), typeof(sbyte[]), typeof(byte), typeof(byte[]), typeof(ushort), typeof(uint),
            typeof(ulong), typeof(short), typeof(int), typeof(long), typeof(decimal), typeof(float), typeof(double),
            typeof(Guid), typeof(string), typeof(char), typeof(DateTime), typeof(TimeSpan),
        };

        private static string TypeName(Type t)
        {
            if (!t.IsGenericType) return t.FullName ?? t.Name;
            var n = t.GetGenericTypeDefinition().FullName ?? t.Name;
            int tick = n.IndexOf('`');
            return (tick < 0 ? n : n.Substring(0, tick)) + "<" + string.Join(", ", t.GetGenericArguments().Select(TypeName)) + ">";
        }

        public void Execute(PolicyNode node, Exec exec)
        {
            var name = P.LiteralAttr(node, "name");
            if (string.IsNullOrEmpty(name)) throw P.Config(node, "attribute name is required");
            var a = node.Attribute("value");
            if (a == null) throw P.Config(node, "attribute value is required");
            var v = exec.Eval(a.Value);
            if (v != null && !Allowed.Contains(v.GetType()) && !(v is JToken))
                throw new PolicyException(node.Name, "ExpressionValueEvaluationFailure",
                    "set-variable \"" + name + "\": a value of type " + TypeName(v.GetType()) +
                    " cannot be stored in a variable (allowed: bool, numeric types, char, string, byte[], Guid, DateTime, TimeSpan, their nullable forms, and Newtonsoft J* types)",
                    a.Value.Where ?? node.Where);
            exec.Variables[name] = v;
        }
    }

    /// <summary>choose-policy.md: the first &lt;when&gt; whose condition is true runs; otherwise runs when none is.</summary>
    public sealed class ChoosePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            foreach (var c in node.Children)
            {
                if (c.Name == "when")
                {
                    var cond = c.Attribute("condition");
                    if (cond == null) throw P.Config(c, "attribute condition is required");
                    if (P.At(exec, c, () => exec.EvalBool(cond.Value), "choose"))
                    {
                        exec.Run(c.Children);
                        return;
                    }
                }
                else if (c.Name == "otherwise")
                {
                    exec.Run(c.Children);
                    return;
                }
                else throw P.Config(node, "<" + c.Name + "> is not allowed in <choose> (only <when> and <otherwise>)");
            }
        }
    }

    /// <summary>
    /// return-response-policy.md: ends the pipeline and answers with the response built from
    /// response-variable-name (a send-request response) and/or the children set-status, set-header,
    /// set-body. Default 200 with no body. Nothing after it runs (see Pipeline.cs).
    /// </summary>
    public sealed class ReturnResponsePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            ResponseState r;
            var varName = P.LiteralAttr(node, "response-variable-name");
            if (varName != null)
            {
                object v;
                if (!exec.Variables.TryGetValue(varName, out v) || v == null)
                    throw P.Config(node, "variable \"" + varName + "\" is not set");
                var found = exec.Services.Responses.Find(v);
                if (found == null) throw P.Config(node, "variable \"" + varName + "\" does not hold a response (send-request stores one)");
                r = P.Clone(found);
            }
            else r = new ResponseState();

            foreach (var c in node.Children)
            {
                var child = c;
                switch (c.Name)
                {
                    case "set-status": P.At(exec, child, () => SetStatusPolicy.Apply(child, exec, r)); break;
                    case "set-header": P.At(exec, child, () => P.ApplyNamed(exec, child, r.Headers, SetHeaderPolicy.Fixed)); break;
                    case "set-body": P.At(exec, child, () => { r.Body = SetBodyPolicy.Evaluate(child, exec); }); break;
                    default: throw P.Config(node, "<" + c.Name + "> is not allowed in <return-response> (set-status, set-header, set-body)");
                }
            }
            exec.Request.Body = new byte[0];
            Pipeline.SetResponse(exec, r);
            exec.Ended = true;
        }
    }

    /// <summary>trace-policy.md: locally a log line on stderr (APIM writes it to the request trace / Application Insights).</summary>
    public sealed class TracePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            var source = P.LiteralAttr(node, "source", "");
            var severity = P.LiteralAttr(node, "severity", "verbose");
            var msgNode = node.ChildrenNamed("message").FirstOrDefault();
            var message = msgNode == null ? "" : P.At(exec, msgNode, () => exec.EvalString(msgNode.Text, ""), "trace");
            var meta = node.ChildrenNamed("metadata")
                .Select(m => (exec.AttrString(m, "name", "") ?? "") + "=" + (exec.AttrString(m, "value", "") ?? ""))
                .ToList();
            exec.Services.Log("trace [" + severity + "] " + source + ": " + message + (meta.Count > 0 ? " {" + string.Join(", ", meta) + "}" : ""));
        }
    }
}
