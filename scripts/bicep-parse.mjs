// Parses each .bicep file given on the command line with tree-sitter-bicep
// and prints every ERROR and MISSING node as file:line:col. Exit status 1
// when any file has one, 2 on usage or read errors.
//   node scripts/bicep-parse.mjs infra/main.bicep infra/modules/*.bicep
//
// Grammar gaps of tree-sitter-bicep 1.1.0 (it predates Bicep 0.30):
// - `extension` statements (which replaced `provider`/`import` for Bicep
//   extensions such as Microsoft Graph) are unknown. Before parsing, a line
//   `extension NAME` becomes `import 'NAME'` and `extension '<ref>' …`
//   becomes `import '<ref>' …`, the grammar's older form of the same
//   statement; lines keep their numbers.
// - The spread operator (`...obj` in objects and arrays, Bicep 0.27) is not
//   known either and is reported as an ERROR: avoid it, or use union()/concat().
import { readFileSync } from 'node:fs';
import Parser from 'tree-sitter';
import Bicep from 'tree-sitter-bicep';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/bicep-parse.mjs FILE.bicep...');
  process.exit(2);
}
const parser = new Parser();
parser.setLanguage(Bicep);

let bad = 0;
for (const file of files) {
  let src;
  try {
    src = readFileSync(file, 'utf8');
  } catch (e) {
    console.error(`${file}: ${e.message}`);
    process.exit(2);
  }
  src = src.replace(/^(\s*)extension\s+([A-Za-z_]\w*)[ \t]*$/gm, "$1import '$2'")
    .replace(/^(\s*)extension(\s+')/gm, '$1import$2');
  // The node binding's default buffer is 32 KiB; pass one big enough.
  const tree = parser.parse(src, undefined, { bufferSize: Math.max(32 * 1024, src.length * 2 + 1024) });
  const problems = [];
  const walk = (node) => {
    if (node.isMissing) {
      problems.push(`${file}:${node.startPosition.row + 1}:${node.startPosition.column + 1}: MISSING ${node.type}`);
    } else if (node.type === 'ERROR') {
      const text = node.text.split('\n')[0].slice(0, 60);
      problems.push(`${file}:${node.startPosition.row + 1}:${node.startPosition.column + 1}: ERROR near ${JSON.stringify(text)}`);
    }
    if (node.hasError || node.isMissing) {
      for (const child of node.children) walk(child);
    }
  };
  walk(tree.rootNode);
  if (tree.rootNode.hasError && problems.length === 0) {
    problems.push(`${file}:1:1: ERROR (parse tree has errors)`);
  }
  for (const p of problems) console.log(p);
  if (problems.length) bad++;
  else console.log(`${file}: ok`);
}
process.exit(bad ? 1 : 0);
