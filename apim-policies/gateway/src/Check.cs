// The whole front end in one call: load the manifest, named values and policy
// files, validate them, compile the expressions. Used by `check` and `serve`.
using System;
using System.Collections.Generic;
using System.Linq;

namespace Gateway
{
    public static class BundleCheck
    {
        /// <summary>Every problem of the bundle, sorted by file and line (problems without a place first).</summary>
        public static List<Problem> Run(string manifestPath, string namedValuesPath)
        {
            Bundle bundle;
            return Run(manifestPath, namedValuesPath, out bundle);
        }

        /// <summary>
        /// As Run, and hands back the bundle (with compiled expressions) for serving. The bundle is
        /// usable only when the returned list is empty; it is null when the manifest was unreadable.
        /// </summary>
        public static List<Problem> Run(string manifestPath, string namedValuesPath, out Bundle bundle)
        {
            var problems = new List<Problem>();
            bundle = null;
            try
            {
                bundle = BundleLoader.Load(manifestPath, namedValuesPath, problems);
                if (bundle != null)
                {
                    Schema.Validate(bundle, problems);
                    ExpressionCompiler.Compile(bundle, problems);
                }
            }
            catch (Exception e)
            {
                problems.Add(new Problem(null, "internal error while checking the bundle: " + e));
            }
            return Sort(problems);
        }

        /// <summary>Sorts by file (ordinal), then line, keeping the order of equal places.</summary>
        public static List<Problem> Sort(IEnumerable<Problem> problems)
        {
            return problems
                .Select((p, i) => new { p, i })
                .OrderBy(x => x.p.Where == null ? 0 : 1)
                .ThenBy(x => x.p.Where == null ? "" : x.p.Where.File, StringComparer.Ordinal)
                .ThenBy(x => x.p.Where == null ? 0 : x.p.Where.Line)
                .ThenBy(x => x.i)
                .Select(x => x.p)
                .ToList();
        }
    }
}
