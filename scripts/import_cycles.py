#!/usr/bin/env python3
"""File-level import cycles in src/: prints each cycle, exits 1 if any.

A file imports another when its code names an item of the other through a
`crate::`, `super::` or `self::` path, in a `use` declaration or inline
(`crate::cni::command::dispatch_with(...)`). A path ending in a module that
re-exports the item (`pub use engine::Allocator` in allocator/mod.rs) is
followed to the file that defines it. A module's re-exports of its own
submodules (the `pub use` lines of a mod.rs) are not imports: they are the
module's front door, not a dependency. Comments and string literals are
ignored; `#[cfg(test)]` code counts like any other.

Every simple cycle is printed (from its first file in sorted order), then
the count of cycles and of the groups they form (the graph's strongly
connected components with more than one file).

Usage: scripts/import_cycles.py [SRC_DIR]   (default: src/ beside scripts/)
Standard library only.
"""
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The text with comments and string/char literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1:i] or " "):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # module path (tuple) -> file (relative to src)
        self.text = {}  # file -> stripped text
        self.owner = {}  # module path -> file that holds it (inline modules too)
        self.reexports = {}  # module path -> {name: absolute path}
        self.children = {}  # module path -> set of child names
        self.load((), "lib.rs")

    def load(self, mod, rel):
        path = os.path.join(self.src, rel)
        with open(path, encoding="utf-8") as f:
            text = strip(f.read())
        self.files[mod] = rel
        self.text[rel] = text
        self.scan_mods(mod, rel, text)

    def scan_mods(self, mod, rel, text):
        """Record the modules `text` declares (files and inline blocks)."""
        self.owner[mod] = rel
        self.children.setdefault(mod, set())
        dir_of = os.path.dirname(rel)
        own_dir = dir_of if os.path.basename(rel) in ("lib.rs", "mod.rs") else os.path.join(dir_of, os.path.basename(rel)[:-3])
        pattern = re.compile(r'(#\[path\s*=\s*""\]\s*)?(?:pub(?:\([^)]*\))?\s+)?mod\s+(' + IDENT + r")\s*([;{])")
        # `#[path = "..."]` was blanked by strip(); find its value in the raw text.
        raw = open(os.path.join(self.src, rel), encoding="utf-8").read()
        raw_paths = dict((m.group(2), m.group(1)) for m in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(' + IDENT + ")", raw))
        depth_at = brace_depths(text)
        for m in pattern.finditer(text):
            if depth_at[m.start()] != 0:
                continue  # nested inside an inline module: handled with it
            name, kind = m.group(2), m.group(3)
            child = mod + (name,)
            self.children[mod].add(name)
            if kind == ";":
                if name in raw_paths:
                    cand = [os.path.normpath(os.path.join(dir_of, raw_paths[name]))]
                else:
                    cand = [os.path.join(own_dir, name + ".rs"), os.path.join(own_dir, name, "mod.rs")]
                for c in cand:
                    if os.path.exists(os.path.join(self.src, c)):
                        self.load(child, c)
                        break
            else:
                start = m.end()
                end = matching_brace(text, start - 1)
                self.scan_mods_inline(child, rel, text[start:end], own_dir)

    def scan_mods_inline(self, mod, rel, body, parent_dir):
        self.owner[mod] = rel
        self.children.setdefault(mod, set())
        depth_at = brace_depths(body)
        for m in re.finditer(r"(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])", body):
            if depth_at[m.start()] != 0:
                continue
            name = m.group(1)
            self.children[mod].add(name)
            if m.group(2) == "{":
                end = matching_brace(body, m.end() - 1)
                self.scan_mods_inline(mod + (name,), rel, body[m.end():end], parent_dir)

    def module_at(self, rel, text, pos):
        """The module path of position `pos` in file `rel` (inline modules included)."""
        base = next(m for m, f in self.files.items() if f == rel)
        mod = base
        stack = []
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{|[{}]", text[:pos]):
            tok = m.group(0)
            if tok.startswith("mod"):
                stack.append(m.group(1))
            elif tok == "{":
                stack.append(None)
            else:
                if stack:
                    stack.pop()
        return base + tuple(s for s in stack if s is not None)


def brace_depths(text):
    depth, out = 0, []
    for c in text:
        out.append(depth)
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
    out.append(depth)
    return out


def matching_brace(text, open_pos):
    depth = 0
    for i in range(open_pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return len(text)


def expand_tree(tree):
    """`a::{b, c::{d, e as f}, self}` -> [[a,b], [a,c,d], [a,c,e], [a]]."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, s):
        for p in split_top(s):
            if not p:
                continue
            if "{" in p:
                head, rest = p.split("{", 1)
                walk(prefix + [x for x in head.split("::") if x], rest[:-1])
            else:
                segs = [x for x in p.split("::") if x]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                out.append(prefix + segs)

    walk([], tree)
    return out


def split_top(s):
    parts, depth, cur = [], 0, ""
    for c in s:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (c == "{") - (c == "}")
        cur += c
    parts.append(cur)
    return parts


def absolute(mod, segs):
    """`segs` (starting with crate/super/self) made absolute from module `mod`."""
    if not segs:
        return None
    if segs[0] == "crate":
        return list(segs[1:])
    base = list(mod)
    i = 0
    if segs[0] == "self":
        i = 1
    while i < len(segs) and segs[i] == "super":
        if not base:
            return None
        base.pop()
        i += 1
    if i == 0:
        return None
    return base + list(segs[i:])


def collect(crate):
    """uses: {file: [(module, absolute path)]}; re-exports recorded on crate."""
    uses = {}
    for rel, text in crate.text.items():
        items = []
        for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
            mod = crate.module_at(rel, text, m.start())
            for segs in expand_tree(m.group(2)):
                if not segs or segs[0] not in ("crate", "super", "self"):
                    # a bare `use child::X` inside a module names its child
                    if segs and segs[0] in crate.children.get(mod, ()):
                        segs = ["self"] + segs
                    else:
                        continue
                path = absolute(mod, segs)
                if path is None:
                    continue
                if m.group(1) and m.group(1).startswith("pub") and path:
                    crate.reexports.setdefault(mod, {})[path[-1]] = path
                items.append((mod, path, bool(m.group(1))))
        use_spans = [(m.start(), m.end()) for m in re.finditer(r"\buse\s+[^;]+;", text)]
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::" + IDENT + r")+)", text):
            if any(a <= m.start() < b for a, b in use_spans):
                continue
            mod = crate.module_at(rel, text, m.start())
            path = absolute(mod, m.group(1).split("::"))
            if path is not None:
                items.append((mod, path, False))
        uses[rel] = items
    return uses


def resolve(crate, path, depth=0):
    """The file defining the item at absolute `path` (following re-exports)."""
    mod = ()
    i = 0
    while i < len(path) and mod + (path[i],) in crate.owner:
        mod = mod + (path[i],)
        i += 1
    if i < len(path) and depth < 8:
        target = crate.reexports.get(mod, {}).get(path[i])
        if target is not None and target != path[: i + 1]:
            return resolve(crate, target + path[i + 1:], depth + 1)
    return crate.owner[mod], mod


def graph(crate, uses):
    edges = {rel: set() for rel in crate.text}
    base = {f: m for m, f in crate.files.items()}
    for rel, items in uses.items():
        top = base[rel]
        for mod, path, is_pub in items:
            target, tmod = resolve(crate, path)
            if target == rel:
                continue
            # A module's re-export of its own submodule is its front door.
            if is_pub and tmod[: len(top)] == top and len(tmod) > len(top):
                continue
            edges[rel].add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def elementary(edges, comp, limit=100):
    """Every simple cycle inside one component (at most `limit`), each
    starting from its smallest file."""
    members, out = sorted(comp), []
    for i, start in enumerate(members):
        allowed = set(members[i:])

        def walk(v, path):
            for w in sorted(edges[v] & allowed):
                if len(out) >= limit:
                    return
                if w == start:
                    out.append(path + [start])
                elif w not in path:
                    walk(w, path + [w])

        walk(start, [start])
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    crate = Crate(src)
    uses = collect(crate)
    edges = graph(crate, uses)
    groups = cycles(edges)
    found = [c for comp in groups for c in elementary(edges, comp)]
    for c in found:
        print("cycle: " + " -> ".join(c))
    print(f"{len(found)} import cycle(s) in {len(groups)} group(s) of files importing each other, among {len(edges)} files")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
