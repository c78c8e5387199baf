// cache-store-value, cache-lookup-value, cache-remove-value over Services.Cache (APIM's internal cache).
// caching-type is accepted and ignored: locally there is only the internal cache, which is what
// prefer-external (the default) uses when no external cache is configured.
// Several cache-store-value in one section are allowed (DESIGN 6: the service does not enforce "once").
using System;
using Newtonsoft.Json.Linq;

namespace Gateway
{
    internal static class CacheValues
    {
        /// <summary>APIM serializes cached values; copying JSON values keeps requests from sharing one mutable object.</summary>
        public static object Copy(object v)
        {
            var t = v as JToken;
            if (t != null) return t.DeepClone();
            var b = v as byte[];
            if (b != null) return b.Clone();
            return v;
        }

        public static void CheckType(PolicyNode node, Exec exec)
        {
            var t = P.LiteralAttr(node, "caching-type", "prefer-external");
            if (t != "prefer-external" && t != "external" && t != "internal")
                throw P.Config(node, "caching-type must be prefer-external, external or internal");
        }
    }

    /// <summary>cache-store-value-policy.md: stores value under key for duration seconds.</summary>
    public sealed class CacheStoreValuePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            CacheValues.CheckType(node, exec);
            var key = P.Required(exec, node, "key");
            if (node.Attribute("duration") == null) throw P.Config(node, "attribute duration is required");
            int seconds = exec.AttrInt(node, "duration");
            var a = node.Attribute("value");
            if (a == null) throw P.Config(node, "attribute value is required");
            var value = exec.Eval(a.Value);
            if (seconds <= 0) { exec.Services.Cache.Remove(key); return; }
            exec.Services.Cache.Store(key, CacheValues.Copy(value), TimeSpan.FromSeconds(seconds));
        }
    }

    /// <summary>
    /// cache-lookup-value-policy.md: on a hit the variable gets the cached value; on a miss it gets
    /// default-value when given, and is NOT set otherwise (the page contradicts itself; the VS Code
    /// knowledge base and caching-overview.md's example support "not set").
    /// </summary>
    public sealed class CacheLookupValuePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            CacheValues.CheckType(node, exec);
            var key = P.Required(exec, node, "key");
            var name = P.LiteralAttr(node, "variable-name");
            if (string.IsNullOrEmpty(name)) throw P.Config(node, "attribute variable-name is required");
            object v;
            if (exec.Services.Cache.TryGet(key, out v)) exec.Variables[name] = CacheValues.Copy(v);
            else
            {
                var d = node.Attribute("default-value");
                if (d != null) exec.Variables[name] = exec.Eval(d.Value);
            }
        }
    }

    /// <summary>cache-remove-value-policy.md: removes key.</summary>
    public sealed class CacheRemoveValuePolicy : IPolicy
    {
        public void Execute(PolicyNode node, Exec exec)
        {
            CacheValues.CheckType(node, exec);
            exec.Services.Cache.Remove(P.Required(exec, node, "key"));
        }
    }
}
