#!/usr/bin/env python3
"""Checks the architecture invariants of ARCHITECTURE.md that a reading of the sources can decide,
so they stay true without anyone remembering them. `scripts/test.sh` runs it; it prints every
violation with its file and exits 1 if there is one.

    scripts/check-structure.py            # from the repository root (or anywhere in it)

What it checks:
1. Crate arrows (Cargo.toml `[dependencies]`): gantry-core depends on no gantry crate; no library
   crate depends on gantry-cli; provider crates never depend on gantry-engine; each
   protocol/database/cloud crate is a dependency of its one owner only (russh: gantry-ssh;
   rusqlite: gantry-state; tokio-postgres, deadpool-postgres, tokio-postgres-rustls:
   gantry-state-pg; etcd-client: gantry-state-etcd; aws-sdk-*: gantry-aws, and
   gantry-secrets-awskms for aws-sdk-kms; bollard: gantry-docker; aes-gcm and argon2:
   gantry-secrets); anyhow and miette only in gantry-cli; gantry-secrets depends on no gantry
   crate but gantry-core; gantry-secrets-awskms on gantry-secrets only.
2. gantry-core does no IO: its sources name no `std::fs`, socket, `std::process` or `tokio`.
3. gantry-cli names no provider crate (`gantry_local`, `gantry_docker`, `gantry_aws`, ...: every
   crate of PROVIDER_CRATES), not even in a comment, outside the one place that registers them
   (src/providers.rs) and the local node agent's entry point (src/commands/agent.rs, which runs
   gantry-local's agent). Adding a provider is its crate plus one registration line.
4. No import circle between modules of one crate. Every `crate::a::b` or `super::x` path in a
   module's file is an arrow from that module to the module it names, lifted to the two sibling
   modules below their nearest common parent (`crate::ops::up` using `crate::transport` is an
   arrow ops -> transport). A cycle among siblings is a circle. A module naming its own
   ancestor or descendant (a parent re-exporting a child, a child using its parent's types) is
   not an arrow between siblings and is allowed.
"""

import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = os.path.join(ROOT, "crates")

# What each third-party family may be a (normal) dependency of.
OWNED = {
    "russh": {"gantry-ssh"},
    "russh-sftp": {"gantry-ssh"},
    "rusqlite": {"gantry-state"},
    "bollard": {"gantry-docker"},
    "aes-gcm": {"gantry-secrets"},
    "argon2": {"gantry-secrets"},
    # PostgreSQL stays out of gantry-state (and of everything that only needs SQLite).
    "tokio-postgres": {"gantry-state-pg"},
    "deadpool-postgres": {"gantry-state-pg"},
    "tokio-postgres-rustls": {"gantry-state-pg"},
    "etcd-client": {"gantry-state-etcd"},
    "anyhow": {"gantry-cli"},
    "miette": {"gantry-cli"},
}
OWNED_PREFIX = {"aws-sdk-": {"gantry-aws"}, "aws-config": {"gantry-aws", "gantry-secrets-awskms"}}
# Families whose owner is decided before OWNED_PREFIX (a more specific name wins).
OWNED["aws-sdk-kms"] = {"gantry-secrets-awskms"}
PROVIDER_CRATES = {"gantry-local", "gantry-aws", "gantry-docker"}

problems = []


def problem(where, what):
    problems.append(f"{os.path.relpath(where, ROOT)}: {what}")


def crates():
    for name in sorted(os.listdir(CRATES)):
        manifest = os.path.join(CRATES, name, "Cargo.toml")
        if os.path.isfile(manifest):
            with open(manifest, "rb") as f:
                yield name, manifest, tomllib.load(f)


# --- 1. crate arrows ---------------------------------------------------------------------------
for name, manifest, toml in crates():
    deps = set(toml.get("dependencies", {}))
    for target in toml.get("target", {}).values():
        deps |= set(target.get("dependencies", {}))
    gantry = {d for d in deps if d.startswith("gantry-")}
    if name == "gantry-core" and gantry:
        problem(manifest, f"gantry-core depends on {sorted(gantry)}; it must depend on no gantry crate")
    if name != "gantry-cli" and "gantry-cli" in deps:
        problem(manifest, "a library crate depends on gantry-cli")
    if name == "gantry-secrets" and gantry - {"gantry-core"}:
        problem(manifest, f"gantry-secrets depends on {sorted(gantry - {'gantry-core'})}; it may depend on gantry-core only")
    if name == "gantry-secrets-awskms" and gantry - {"gantry-secrets"}:
        problem(manifest, f"gantry-secrets-awskms depends on {sorted(gantry - {'gantry-secrets'})}; it may depend on gantry-secrets only")
    if name in PROVIDER_CRATES and "gantry-engine" in deps:
        problem(manifest, "a provider crate depends on gantry-engine")
    for dep in deps:
        owners = OWNED.get(dep)
        for prefix, o in OWNED_PREFIX.items():
            if dep.startswith(prefix) and dep not in OWNED:
                owners = o
        if owners is not None and name not in owners:
            problem(manifest, f"depends on {dep}, which only {sorted(owners)} may use")

# --- 2. gantry-core does no IO -----------------------------------------------------------------
# Address types (`std::net::IpAddr`) are values, not IO; sockets are.
IO = re.compile(r"\b(std::fs|std::process|tokio|std::net::(?:Tcp|Udp|ToSocketAddrs)\w*)\b")


def rust_files(src):
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def code_lines(path):
    """The file's lines with `//` comments cut off (doc comments may name anything)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            yield n, line.split("//", 1)[0]


for path in rust_files(os.path.join(CRATES, "gantry-core", "src")):
    for n, line in code_lines(path):
        if IO.search(line):
            problem(path, f"line {n}: gantry-core does no IO, but names {IO.search(line).group(1)}")

# --- 3. gantry-cli names providers in one place -------------------------------------------------
CLI_SRC = os.path.join(CRATES, "gantry-cli", "src")
MAY_NAME_PROVIDERS = {
    os.path.join(CLI_SRC, "providers.rs"),
    os.path.join(CLI_SRC, "commands", "agent.rs"),
}
PROVIDER_NAME = re.compile(
    r"\b(" + "|".join(sorted(c.replace("-", "_") for c in PROVIDER_CRATES)) + r")\b"
)
for path in rust_files(CLI_SRC):
    if path in MAY_NAME_PROVIDERS:
        continue
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = PROVIDER_NAME.search(line)
            if m:
                problem(
                    path,
                    f"line {n}: names the provider crate {m.group(1)}; only src/providers.rs "
                    "registers providers",
                )

# --- 4. no import circle between modules of one crate ------------------------------------------
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\}", re.S)


def module_of(src, path):
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)


def module_tree(src):
    mods = {module_of(src, p): p for p in rust_files(src)}
    # Inline `mod name {` blocks are part of their file's module here (tests, small helpers).
    return mods


def resolve(mods, start, segments):
    """The longest known module path a path names (`a::b::Item` -> (a, b) if module a::b exists)."""
    best = ()
    for i in range(1, len(segments) + 1):
        if tuple(segments[:i]) in mods:
            best = tuple(segments[:i])
        else:
            break
    return best


def arrows(src, mods):
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            text = "\n".join(line.split("//", 1)[0] for line in f)
        names = []
        for m in USE_GROUP.finditer(text):
            base = [] if m.group(1) == "crate" else ["super"]
            for item in re.split(r"[,\s]+", re.sub(r"\{[^}]*\}", "", m.group(2))):
                item = item.strip()
                if item and item not in ("self",):
                    names.append((m.group(1), item.split("::")))
        for m in PATH.finditer(text):
            if m.group(2) == "::{":
                continue
            names.append((m.group(1), m.group(2)[2:].split("::")))
        for kind, segs in names:
            if kind == "crate":
                absolute = segs
            else:
                # `super` from a file's module: its parent (mod.rs/lib.rs files are their module).
                base = list(mod)
                while segs and segs[0] == "super":
                    segs = segs[1:]
                    base = base[:-1]
                base = base[:-1]
                absolute = base + segs
            target = resolve(mods, (), absolute)
            yield mod, target, path


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


sys.setrecursionlimit(10000)
for name, manifest, _ in crates():
    src = os.path.join(CRATES, name, "src")
    if not os.path.isdir(src):
        continue
    mods = module_tree(src)
    graph, why = {}, {}
    for frm, to, path in arrows(src, mods):
        # Lift to siblings below the nearest common parent.
        k = 0
        while k < min(len(frm), len(to)) and frm[k] == to[k]:
            k += 1
        if k == len(frm) or k == len(to):
            continue  # one is the other's ancestor (or the same module)
        a, b = frm[: k + 1], to[: k + 1]
        graph.setdefault(a, set()).add(b)
        why.setdefault((a, b), os.path.relpath(path, ROOT))
    for comp in cycles(graph):
        names = ["::".join(c) for c in comp]
        detail = "; ".join(
            f"{'::'.join(a)} -> {'::'.join(b)} ({why[(a, b)]})"
            for a in comp
            for b in sorted(graph.get(a, ()))
            if b in comp
        )
        problem(src, f"import circle between modules {names}: {detail}")

if problems:
    print("architecture invariants broken (ARCHITECTURE.md, scripts/check-structure.py):")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(
    "structure: crate arrows, gantry-core without IO, providers named in gantry-cli's "
    "providers.rs only, no module import circles: ok"
)
